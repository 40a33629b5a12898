"""Progress of a run, as a value the runner hands to whoever displays it (CLI, web, logs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Progress", "ProgressCallback"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot: counts are of rows whose outcome is durable in the journal."""

    run_id: str
    phase: str  # note (``message`` says it) | started | sending | stopping | done
    total: int | None = None
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0
    retrying: int = 0
    in_flight: int = 0
    elapsed: float = 0.0
    rate: float = 0.0
    message: str = ""
    resumed: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped + self.uncertain

    @property
    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done - self.resumed) / self.rate)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["eta"] = self.eta
        return out


ProgressCallback = Callable[[Progress], None]
