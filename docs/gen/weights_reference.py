"""The published weights page, generated from the registry (``tanet.models.hub``, whose entries
are ``tanet/models/hub_entries.py``): what ``tanet models --pretrained`` lists, with each entry's
test protocol, source and notes, and the class lists. The cache column of the command is left
out (it describes one machine)."""
from __future__ import annotations

__all__ = ["weights_markdown"]

_HEADER = """# Published weights

Every checkpoint tanet can load by name, generated from the registry
(`tanet/models/hub_entries.py`) on every build of this site; `tanet models --pretrained` prints
the same table with a column saying what is in your cache. A name goes wherever a checkpoint
goes (`--checkpoint tanet_r50.k400`, `Predictor("tanet_r50.k400")`, `model.init_from`,
`create_model("tanet_r50", pretrained="k400")`); so does the publisher's full name and an
`https://` URL. Files are downloaded once into `torch.hub.get_dir()/checkpoints`, checked
against the sha256 below, and video checkpoints are converted once to tanet's `.safetensors`.

Accuracies (%) are the publishers' own, measured with `views` = clips × crops under the
protocol given for each entry.
"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def weights_markdown() -> str:
    from tanet.models import hub, hub_entries

    entries = hub.list_weights()
    out = [_HEADER, "| name | model | T | dataset | top-1 | top-5 | views | release |",
           "| --- | --- | ---: | --- | ---: | ---: | --- | --- |"]
    for w in entries:
        out.append(f"| `{w.name}` | `{w.model}` | {w.frames or '-'} | {w.dataset} | "
                   f"{_num(w.top1)} | {_num(w.top5)} | {w.views} | {_cell(w.release)} |")
    out += ["", "## How each was made and measured", ""]
    for w in entries:
        out += [f"### `{w.name}`", "", f"- full name: `{w.full_name or w.name}`",
                f"- layout: `{w.layout}`; {w.num_classes} classes"
                + (f" (class list `{w.classes}`)" if w.classes else ""),
                f"- test protocol: {_cell(w.protocol)}",
                f"- file: `{w.file}` (sha256 `{w.sha256}`)"]
        if w.notes:
            out.append(f"- notes: {_cell(w.notes)}")
        if w.card:
            card = ", ".join(f"`{k}`={v}" for k, v in w.card.items())
            out.append(f"- card of the converted checkpoint: {card}")
        out.append("")
    out += ["## Class lists", "", "| name | classes | source | sha256 |", "| --- | ---: | --- | --- |"]
    for cl in sorted(hub_entries.CLASS_LISTS, key=lambda c: c["name"]):
        out.append(f"| `{cl['name']}` | {cl['count']} | {_cell(cl.get('source', ''))} | "
                   f"`{cl['sha256'][:16]}...` |")
    return "\n".join(out) + "\n"
