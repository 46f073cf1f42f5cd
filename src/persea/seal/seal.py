"""`persea seal`: a released student's directory in, a sealed directory out.

Only a released student is sealed: a passing gate record for exactly the weights being
sealed (their fingerprint), or a recorded forced release of them (`--force-release
--reason` records one, as `persea serve` does). Otherwise one line says why, and nothing is
written. The same holds for a teacher whose licence the licence policy refuses (or that
declares none); the obligations of the others go into the BOM, NOTICE and MODEL_CARD.md. The keys are resolved before anything is written too, and the sealed directory
is built beside its destination and renamed into place only when complete, so an
interrupted seal leaves no half-sealed directory under the name. Once in place, the seal
is appended to the project's register of generations (persea.seal.generations).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from persea.errors import PerseaError
from persea.evaluate.release import find_gate, find_release, require_release
from persea.evaluate.targets import student_dir
from persea.licences import policy
from persea.licences.notices import card_text, notice_text
from persea.models.fingerprint import fingerprint_digests, fingerprint_model_dir, \
    is_fingerprinted
from persea.seal import generations, layout
from persea.seal.bom import write_bom
from persea.seal.keyring import Keyring
from persea.seal.signature import sign_directory
from persea.seal.stream import DEFAULT_SEGMENT, encrypt_bytes, encrypt_stream

WEIGHT_FORMATS = (".bin", ".pt", ".gguf", ".pth")  # pickled or foreign: not sealed


@dataclass
class SealResult:
    out: Path
    sealed_id: str
    fingerprint: str
    release: dict  # kind (gate | forced), ids, who and why for a forced one
    plain_bytes: int
    sealed_bytes: int
    seconds: float


def _now() -> datetime:
    return datetime.now(timezone.utc)


def release_of(project, model_dir: Path, force: bool = False, reason: str | None = None,
               who: str | None = None) -> dict:
    """How these weights were released: a passing gate for their fingerprint, or a forced
    release on record (recorded now when `force`). Raises PerseaError otherwise."""
    fingerprint = fingerprint_model_dir(model_dir)
    gate = find_gate(project, model_dir, fingerprint)
    if gate is not None and gate.get("verdict") == "passed":
        return {"kind": "gate", "fingerprint": fingerprint, "gate_id": gate["id"],
                "gate": gate}
    forced = find_release(project, model_dir, fingerprint)
    if not (forced is not None and forced.get("forced")):
        if not force:
            why = ("its newest gate failed" if gate is not None else
                   "no release gate was run on these weights")
            raise PerseaError(
                f"{model_dir} is not released: {why} (fingerprint {fingerprint[:12]}); run "
                "`persea eval` and `persea gate`, or seal it with --force-release --reason "
                "'...' (the forced release is recorded); nothing written")
        forced = require_release(project, model_dir, True, reason, who)
    return {"kind": "forced", "fingerprint": fingerprint, "release_id": forced["id"],
            "who": forced.get("who"), "reason": forced.get("reason"),
            "gate_id": gate["id"] if gate is not None else None, "gate": gate}


def _model_files(model_dir: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors weight files, other files) of a model directory."""
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and p.name not in layout.NOT_SEALED
                   and not p.name.endswith(".tmp") and not p.name.startswith("."))
    foreign = [p.name for p in files if p.suffix in WEIGHT_FORMATS]
    if foreign:
        raise PerseaError(f"{model_dir}: {', '.join(foreign)} is not safetensors; seal takes "
                          "safetensors weights only (save the model with save_pretrained)")
    weights = [p for p in files if p.suffix == ".safetensors"]
    if not weights:
        raise PerseaError(f"{model_dir}: no .safetensors weights to seal")
    return weights, [p for p in files if p not in weights]


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PerseaError(f"{out} already exists and is not empty; choose another --out or "
                          "delete it (a sealed directory is never overwritten)")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def seal_student(project, out: Path, keyring: Keyring, *, force: bool = False,
                 reason: str | None = None, who: str | None = None,
                 segment_size: int = DEFAULT_SEGMENT) -> SealResult:
    """Seal the project's student into `out`: encrypted streams, seal.json, and the
    signature over them all, built beside `out` and moved into place when complete."""
    model_dir = student_dir(project)
    if not (model_dir / "config.json").is_file():
        raise PerseaError(f"no student at {model_dir}; run `persea distill` first")
    out = Path(out).expanduser()
    _check_out(out)
    weights, small = _model_files(model_dir)
    # the teachers' licences, with the names the student is served under: an undeclared or
    # refused licence is refused before anything is written (persea.licences.policy)
    verdicts = policy.assess_project(project, policy.distilled_teachers(project.spec))
    policy.require(verdicts, policy.SEAL)
    kek = keyring.kek()  # a missing or bad key is refused before anything is written
    signing_key = keyring.signing_key_path()
    release = release_of(project, model_dir, force, reason, who)
    started = time.perf_counter()
    sealed_id = f"sealed_{_now().strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(4)}"
    work = out.parent / f".{out.name}.sealing-{secrets.token_hex(4)}"
    inner = work / out.name
    inner.mkdir(parents=True)
    try:
        data_key = os.urandom(32)
        digests: dict[str, str] = {}
        listed: dict[str, dict] = {}
        plain = 0
        for i, path in enumerate(weights):
            stream = layout.WEIGHTS_STREAM.format(i)
            with open(path, "rb") as src, open(inner / stream, "wb") as dst:
                info = encrypt_stream(src, dst, data_key,
                                      layout.stream_aad(sealed_id, stream), segment_size)
            digests[path.name] = info.sha256
            listed[path.name] = {"stream": stream, "sha256": info.sha256,
                                 "bytes": info.plain_bytes}
            plain += info.plain_bytes
        contents = {p.name: p.read_bytes() for p in small}
        digests.update({n: hashlib.sha256(b).hexdigest() for n, b in contents.items()})
        sealed_fp = fingerprint_digests({n: d for n, d in digests.items()
                                         if is_fingerprinted(n)})
        if sealed_fp != release["fingerprint"]:
            raise PerseaError(f"{model_dir} changed while it was being sealed (fingerprint "
                              f"{release['fingerprint'][:12]} before, {sealed_fp[:12]} "
                              "read); seal it again once nothing writes to it")
        bundle = {"files": {n: base64.b64encode(b).decode() for n, b in contents.items()},
                  "weights": listed, "fingerprint": sealed_fp}
        with open(inner / layout.FILES_STREAM, "wb") as dst:
            encrypt_bytes(json.dumps(bundle, sort_keys=True).encode(), dst, data_key,
                          layout.stream_aad(sealed_id, layout.FILES_STREAM), segment_size)
        plain += sum(len(b) for b in contents.values())
        # each stream's size when sealed: the signed record then names a cut or extended file
        streams = {name: (inner / name).stat().st_size for name in
                   [layout.FILES_STREAM, *(v["stream"] for v in listed.values())]}
        record = {
            "format": layout.FORMAT, "id": sealed_id, "created_at": _now().isoformat(),
            "model": {"project": project.spec.name, "name": "student",
                      "fingerprint": sealed_fp},
            "release": {k: release.get(k) for k in ("kind", "gate_id", "release_id",
                                                     "who", "reason") if release.get(k)},
            "encryption": {"scheme": layout.SCHEME, "segment_size": segment_size,
                           "streams": streams},
            "data_key": {"wrapped": base64.b64encode(kek.wrap(data_key)).decode(),
                         "algorithm": kek.algorithm, "kek_id": kek.key_id},
        }
        _write_json(inner / layout.SEAL_JSON, record)
        write_bom(inner / layout.BOM, project, record, release,
                  json.loads(contents["config.json"]), verdicts)
        model_name = f"{project.spec.name}-student"
        (inner / layout.NOTICE).write_text(notice_text(model_name, verdicts),
                                           encoding="utf-8")
        (inner / layout.CARD).write_text(card_text(model_name, verdicts, sealed_id),
                                         encoding="utf-8")
        sign_directory(inner, signing_key)  # last: it covers every other file
        sealed_bytes = sum(p.stat().st_size for p in inner.iterdir())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(inner, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    generations.append(
        project, generations.SEALED, sealed_fp, sealed_id=sealed_id,
        paths={"checkpoint": str(model_dir.resolve()), "sealed": str(out.resolve())},
        release={k: release.get(k) for k in ("kind", "gate_id", "release_id", "who",
                                             "reason") if release.get(k)},
        evaluation=generations.evaluation_of(project, sealed_fp))
    return SealResult(out, sealed_id, sealed_fp, release, plain, sealed_bytes,
                      time.perf_counter() - started)
