"""Sequential-editing benchmark harness (``revive bench``): methods vs methods+REVIVE, resumable."""

from .alarm import AlarmEvent, DriftAlarm
from .config import ALL_METHODS, PRESETS, BenchConfig, preset_config
from .harness import Arm, BenchRun, RunResult, arms_for, load_run_config, run_bench
from .report import write_reports

__all__ = [
    "ALL_METHODS", "PRESETS", "AlarmEvent", "Arm", "BenchConfig", "BenchRun", "DriftAlarm", "RunResult",
    "arms_for", "load_run_config", "preset_config", "run_bench", "write_reports",
]
