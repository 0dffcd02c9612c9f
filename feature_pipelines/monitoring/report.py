"""A monitoring report of one partition: its title, image and sections, rendered as Markdown and written to disk.

The same report is shown twice: in the Dagster UI (the materialization's Markdown metadata, the
main image inlined so it needs no file server) and as a `.md` file beside its PNG under the
reports directory (the image linked by file name, so the report stays readable and small).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_pipelines.monitoring.figures import Figures, R
from feature_pipelines.monitoring.plots import markdown_image


def cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None empty."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Table:
    """A Markdown table: a header and rows of cells as read (formatted by `cell`)."""

    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, figures: Figures[R], items: Sequence[R], columns: Sequence[str]) -> Table:
        """The named figures of each result, one row per result."""
        return cls(tuple(figures.headings(columns)), tuple(figures.cells(item, columns) for item in items))

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Image:
    """A PNG shown inline wherever the report is read (`plots.markdown_image`)."""

    path: Path
    alt: str

    def markdown(self) -> str:
        return markdown_image(self.path, alt=self.alt)


Section = str | Table | Image


@dataclass(frozen=True)
class Report:
    """A report: a title, its main image (inlined in the UI, linked in the file) and its sections."""

    title: str
    sections: tuple[Section, ...]
    image: Path | None = None

    def body(self) -> str:
        return "\n\n".join(section if isinstance(section, str) else section.markdown() for section in self.sections)

    def markdown(self) -> str:
        """The Markdown the Dagster UI shows: the main image inlined."""
        inline = markdown_image(self.image, alt=self.title) if self.image is not None else ""
        return f"## {self.title}\n\n{inline}\n\n{self.body()}\n"

    def file_text(self) -> str:
        """The `.md` file's text: the main image linked by its name (the PNG sits beside it)."""
        if self.image is None:
            return self.markdown()
        return f"## {self.title}\n\n![{self.title}]({self.image.name})\n\n{self.body()}\n"

    def write(self, directory: Path, partition: str) -> Path:
        """Write `<directory>/<partition>.md`; returns its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{partition}.md"
        path.write_text(self.file_text())
        return path


__all__ = ["Image", "Report", "Section", "Table", "cell"]
