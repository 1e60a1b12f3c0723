"""Drift alarm: warn (or stop an arm) when an edited matrix's dominant subspace drifts (§2.3).

LS (Eq. 3) near 1 means the top-energy reconstruction of ``W_t`` still points where ``W_0``'s
did; SS (mean over dominant vectors of the best |cos| with the original basis) near 1 means the
dominant singular vectors have not rotated. The paper shows both falling before collapse
(Figs 4, 5), so thresholds on them are an early warning that works for plain methods too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import ALARM_ACTIONS, check_fraction


@dataclass(frozen=True)
class AlarmEvent:
    round: int
    edits: int
    param: str
    metric: str
    value: float
    threshold: float

    def message(self) -> str:
        return (f"drift alarm after round {self.round} ({self.edits} edits): {self.metric}={self.value:.4f} "
                f"< {self.threshold:g} on {self.param}")

    def to_dict(self) -> dict:
        return asdict(self)


class DriftAlarm:
    """Thresholds on LS and SS (left and right, ``*_mean_max``) of every edited matrix.

    ``ls_min`` / ``ss_min``: fire when a value drops below; None disables that check.
    ``action``: "warn" logs and goes on; "stop" ends the arm after the checkpoint.
    """

    def __init__(self, ls_min: float | None = None, ss_min: float | None = None, action: str = "warn"):
        self.ls_min = None if ls_min is None else check_fraction(ls_min, "alarm_ls", allow_one=True)
        self.ss_min = None if ss_min is None else check_fraction(ss_min, "alarm_ss", allow_one=True)
        if action not in ALARM_ACTIONS:
            raise ValueError(f"alarm action must be one of {list(ALARM_ACTIONS)}, got {action!r}")
        self.action = action

    @property
    def enabled(self) -> bool:
        return self.ls_min is not None or self.ss_min is not None

    def check(self, round_: int, edits: int, per_param: dict) -> list[AlarmEvent]:
        """Events for one checkpoint; ``per_param`` maps a parameter name to its spectral report."""
        events = []
        for name, rep in per_param.items():
            checks = []
            if self.ls_min is not None:
                checks.append(("ls", self.ls_min))
            if self.ss_min is not None:
                checks += [("ss_left_mean_max", self.ss_min), ("ss_right_mean_max", self.ss_min)]
            for metric, thr in checks:
                value = rep.get(metric)
                if value is not None and float(value) < thr:
                    events.append(AlarmEvent(round_, edits, name, metric, float(value), thr))
        return events

    def should_stop(self, events: list) -> bool:
        return self.action == "stop" and bool(events)
