"""The state diagram, drawn from the same declaration the engine runs (Graphviz DOT text)."""

from __future__ import annotations

from lbw_sim.guard.palette import regime_colors
from lbw_sim.guard.spec import GuardSpec, sources_of

#: a transition from this many regimes or more is drawn as one edge from a note listing them
#: (the non-finite rule leaves 13 regimes of the default: 13 edges would hide the rest)
FAN_IN = 4


def _quote(text: str) -> str:
    """A DOT string literal; real newlines become DOT's centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def to_dot(spec: GuardSpec, active: str | None = None, conditions: bool = False,
           taken: tuple[str, str] | None = None) -> str:
    """DOT for `st.graphviz_chart`: regimes as nodes (the active one bold), transitions as edges.

    Edges are labelled with the transition's name, priority, debounce and dwell; its
    condition is the edge's tooltip (or part of the label with `conditions=True`).
    `taken` = (from regime, transition name) draws the edge just taken thick and in the
    colour of the regime it led to (from a fan-in note: that note's edge).
    """
    lines = ["digraph guard {", "  rankdir=TB; nodesep=0.35; ranksep=0.45;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12];',
             '  edge [fontname="Helvetica", fontsize=9, color="#666666"];']
    colors = regime_colors(spec)
    for name, r in spec.regimes.items():
        control = [f"lr×{r.lr_scale:g}"]
        if r.skip:
            control.append("skip")
        if r.momentum_scale != 1:
            control.append(f"mom×{r.momentum_scale:g}")
        if r.rollback:
            control.append(f"rollback+{r.skip_batches}")
        if r.stop:
            control.append("STOP")
        label = _quote(f"{name}\n{', '.join(control)}")
        width = 3 if name == active else 1
        shape = ', peripheries=2' if name == spec.initial else ''
        lines.append(f'  {_quote(name)} [label={label}, fillcolor="{colors[name]}40", '
                     f'color="{colors[name]}", penwidth={width}{shape}];')
    for t in spec.transitions:
        sources = sources_of(t, spec)
        extra = f" ×{t.for_}" if t.for_ > 1 else ""
        extra += f", dwell {t.min_dwell}" if t.min_dwell else ""
        label = f"{t.name} [{t.priority}]{extra}" + (f"\n{t.when}" if conditions else "")
        if len(sources) >= FAN_IN:  # one edge from a note naming the sources, not N edges
            hub = _quote(f"{t.name} (from)")
            rest = [r for r in spec.regimes if r not in sources and r != t.to]
            note = (f"from every regime\nbut {', '.join(rest)}" if len(rest) <= 4
                    else f"from {len(sources)} regimes")
            lines.append(f"  {hub} [shape=note, style=filled, fillcolor=\"#f4f4f4\", "
                         f"fontsize=9, label={_quote(note)}, "
                         f"tooltip={_quote(', '.join(sources))}];")
            sources = [hub[1:-1]]
        fanned = len(sources_of(t, spec)) >= FAN_IN
        hot_style = f', color="{colors[t.to]}", penwidth=3.5, fontcolor="#000000"'
        for src in sources:
            hot = taken is not None and taken[1] == t.name and (fanned or taken[0] == src)
            lines.append(f"  {_quote(src)} -> {_quote(t.to)} [label={_quote(label)}, "
                         f"tooltip={_quote(t.when)}{hot_style if hot else ''}];")
    lines.append("}")
    return "\n".join(lines)
