"""The report of ``topv-check``: findings per graph, a text table and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from topv.engines import trt_ops

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    """One problem (or note) about one graph."""

    severity: str
    check: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class GraphReport:
    """What the check found in one graph."""

    graph: str
    file: str
    opset: int | None = None
    ir_version: int | None = None
    nodes: int = 0
    operators: dict[str, int] = field(default_factory=dict)
    external: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(f.severity == severity for f in self.findings)

    @property
    def ok(self) -> bool:
        return self.count(ERROR) == 0

    def add(self, severity: str, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding(severity, check, subject, message))

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "file": self.file,
            "ok": self.ok,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "nodes": self.nodes,
            "operators": dict(sorted(self.operators.items())),
            "external_data": self.external,
            "errors": self.count(ERROR),
            "warnings": self.count(WARNING),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class CheckReport:
    """The whole folder's report."""

    folder: str
    trt_version: str
    version_source: str
    graphs: list[GraphReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # about the folder, not one graph
    target: str = "tensorrt"

    def all_findings(self) -> Iterator[tuple[str, Finding]]:
        for f in self.findings:
            yield "(folder)", f
        for g in self.graphs:
            for f in g.findings:
                yield g.graph, f

    def count(self, severity: str) -> int:
        return sum(f.severity == severity for _, f in self.all_findings())

    def passed(self, strict: bool = False) -> bool:
        return self.count(ERROR) == 0 and (not strict or self.count(WARNING) == 0)

    @property
    def ok(self) -> bool:
        return self.passed()

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "target": self.target,
            "tensorrt_version": self.trt_version,
            "version_source": self.version_source,
            "operator_table": dict(trt_ops.SOURCE),
            "ok": self.ok,
            "errors": self.count(ERROR),
            "warnings": self.count(WARNING),
            "findings": [f.to_json() for f in self.findings],
            "graphs": [g.to_json() for g in self.graphs],
        }

    def format_text(self, verbose: bool = True) -> str:
        """A table per graph, then every finding, then the verdict."""
        src = trt_ops.SOURCE
        lines = [
            f"TensorRT compatibility of {self.folder}",
            f"target: TensorRT {self.trt_version} ({self.version_source}); operator table: onnx-tensorrt "
            f"{src['file']} for TensorRT {src['table_version']}",
            "",
        ]
        header = ("graph", "file", "opset", "nodes", "op types", "external", "errors", "warnings", "result")
        rows = [header]
        for g in self.graphs:
            ext = g.external
            ext_text = f"{ext.get('tensors', 0)} ({_mib(ext.get('bytes', 0))})" if ext.get("tensors") else "-"
            rows.append((
                g.graph, g.file, str(g.opset if g.opset is not None else "?"), str(g.nodes), str(len(g.operators)),
                ext_text, str(g.count(ERROR)), str(g.count(WARNING)), "ok" if g.ok else "FAIL",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        shown = [(g, f) for g, f in self.all_findings() if verbose or f.severity != INFO]
        if shown:
            lines += ["", "findings:"]
            order = {ERROR: 0, WARNING: 1, INFO: 2}
            for graph, f in sorted(shown, key=lambda gf: order[gf[1].severity]):
                lines.append(f"  {f.severity.upper():7s} {graph} [{f.check}] {f.subject}: {f.message}")
        errors, warnings = self.count(ERROR), self.count(WARNING)
        lines.append("")
        if errors:
            failing = sorted({g for g, f in self.all_findings() if f.severity == ERROR})
            lines.append(
                f"result: FAIL - {errors} error(s), {warnings} warning(s); {', '.join(failing)} will not build with "
                f"TensorRT {self.trt_version} as exported."
            )
        else:
            lines.append(
                f"result: OK - {len(self.graphs)} graph(s), {warnings} warning(s); nothing found that keeps TensorRT "
                f"{self.trt_version}'s ONNX parser from building them (a static check: topv-build is the real test)."
            )
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
