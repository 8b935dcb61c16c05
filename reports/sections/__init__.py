"""The report's sections, one module each; every section is a function of the computed `reports.context.Context`
that returns a `Section`: its markdown, the figures it drew and the numbers it printed (for tests and the
key findings). `Page` collects the three while a section is written; `Page.figure` is the one way a figure
enters the markdown (the figure itself is saved, and its layout checked, by `reports.layout.save`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from accounting.hardware import HARDWARE

from ..layout import Drawn


@dataclass(frozen=True)
class Section:
    """A section's markdown, the PNGs it drew, the numbers it printed, and each figure's layout problems."""
    markdown: str
    figures: tuple[Path, ...] = ()
    values: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    problems: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


class Page:
    """Lines, figures, values and layout problems of a section being written."""

    def __init__(self, *lines: str):
        self.lines: list[str] = list(lines)
        self.figures: list[Path] = []
        self.values: dict[str, float] = {}
        self.problems: dict[str, tuple[str, ...]] = {}

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def record(self, drawn: Drawn) -> Path:
        """Keep a drawn figure's path and layout problems; return its path."""
        self.figures.append(drawn.path)
        self.problems[drawn.path.stem] = drawn.problems
        return drawn.path

    def figure(self, drawn: Drawn | None, caption: str) -> str:
        """The markdown of a drawn figure (image and caption), recording it; '' when nothing was drawn."""
        if drawn is None:
            return ""
        return f"![{caption}](figures/{self.record(drawn).name})\n\n*Figure: {caption}*\n"

    def include(self, part: Section) -> str:
        """Take over a sub-section's figures, values and problems; return its markdown."""
        self.figures.extend(part.figures)
        self.values.update(part.values)
        self.problems.update(part.problems)
        return part.markdown

    def section(self, sep: str = "\n") -> Section:
        return Section(sep.join(self.lines), tuple(self.figures), MappingProxyType(dict(self.values)),
                       MappingProxyType(dict(self.problems)))


def env_line(env: dict) -> str:
    """'<device>, N cores, torch X, T thread(s), commit abc1234' from an env.json-like dict (known fields only)."""
    def ok(x):
        return x is not None and str(x) not in ("", "nan", "None")
    parts = [str(env.get("device_name")) if ok(env.get("device_name")) else "device unknown"]
    if ok(env.get("cpu_count")):
        parts.append(f"{int(float(env['cpu_count']))} cores")
    if ok(env.get("torch")):
        parts.append(f"torch {env['torch']}")
    if ok(env.get("torch_threads")):
        parts.append(f"{int(float(env['torch_threads']))} thread(s)")
    if ok(env.get("git_commit")):
        sha = str(env["git_commit"])
        parts.append(f"commit {sha[:10]}{'-dirty' if sha.endswith('-dirty') else ''}")
    return ", ".join(parts)


def is_gpu(name) -> bool:
    """A device name from a GPU: CUDA, NVIDIA, or the model of a GPU preset in ``accounting.hardware``."""
    gpus = {hw.name.split()[0] for key, hw in HARDWARE.items() if key != "press2025"}  # H100, H800, A100...
    return any(k in str(name) for k in ("NVIDIA", "cuda", *gpus))
