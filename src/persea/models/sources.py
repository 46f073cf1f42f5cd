"""Loading a teacher from any of its sources into a `LanguageModel`.

Every failure a person can cause (a path that is not there, a hub id while offline, a
damaged GGUF file) becomes a `PerseaError` naming the teacher and what was expected.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path

from safetensors import SafetensorError

from persea.errors import PerseaError
from persea.models.builtin import builtin_models
from persea.models.fingerprint import fingerprint_files, fingerprint_model_dir, fingerprint_text
from persea.models.gguf_cache import cache_root, converted_dir
from persea.models.gguf_file import check_gguf
from persea.models.hf import HFModel
from persea.models.hub import hub_endpoint, offline_by_env, reachable
from persea.models.remote import EndpointModel


def _one_line(err: Exception) -> str:
    """An exception's whole message on one line (transformers' span several, and the first
    alone stops mid-sentence)."""
    return " ".join(str(err).split())


@contextmanager
def quiet_gguf_conversion():
    """transformers draws its GGUF conversion bar with plain tqdm, past its own
    disable_progress_bar switch, so the bar would leak into logs: off while it runs."""
    from transformers import modeling_gguf_pytorch_utils as conversion  # heavy: torch

    bar = conversion.tqdm
    conversion.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        conversion.tqdm = bar


def _load_transformers(location: str, **kwargs):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype="float32", **kwargs)
    return model, tok


def load_hf_dir(name: str, directory: Path, chat_template: bool = True) -> HFModel:
    where = f"teacher {name!r}"
    if not directory.exists():
        raise PerseaError(f"{where}: path does not exist: {directory} (expected a Hugging Face "
                          "model directory with config.json)")
    if not (directory / "config.json").is_file():
        raise PerseaError(f"{where}: {directory} has no config.json (expected a Hugging Face "
                          "model directory saved with save_pretrained)")
    try:
        model, tok = _load_transformers(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, SafetensorError) as err:  # damaged weights too
        raise PerseaError(f"{where}: cannot load model from {directory}: "
                          f"{_one_line(err)}") from None
    return HFModel(name, model, tok, fingerprint_model_dir(directory), chat_template)


def load_hub(name: str, repo_id: str, revision: str | None = None,
             chat_template: bool = True) -> HFModel:
    """A hub id: from the local cache if it is there, else downloaded, but only when the
    hub answers; offline it fails at once."""
    where = f"teacher {name!r}"
    try:  # already cached: no network needed
        model, tok = _load_transformers(repo_id, revision=revision, local_files_only=True)
    except (OSError, ValueError):
        flag = offline_by_env()
        if flag:
            raise PerseaError(f"{where}: hub id {repo_id!r} is not in the local cache and the "
                              f"network is off ({flag} is set); download it where there is "
                              "network, or give `path:` to a local copy") from None
        endpoint = hub_endpoint()
        if not reachable(endpoint):
            raise PerseaError(f"{where}: hub id {repo_id!r} is not in the local cache and "
                              f"{endpoint} cannot be reached; give `path:` to a local copy "
                              "instead") from None
        try:
            model, tok = _load_transformers(repo_id, revision=revision)
        except (OSError, ValueError) as err:
            raise PerseaError(f"{where}: cannot load hub id {repo_id!r}: "
                              f"{_one_line(err)}") from None
    fp = fingerprint_text("hub", repo_id, str(getattr(model.config, "_commit_hash", revision)))
    return HFModel(name, model, tok, fp, chat_template)


def load_gguf(name: str, path: Path, chat_template: bool = True) -> HFModel:
    """Dequantised once into a local cache directory (persea.models.gguf_cache), then loaded
    from there like any model directory."""
    where = f"teacher {name!r}"
    check_gguf(path, where)

    def from_gguf():
        try:
            with quiet_gguf_conversion():
                return _load_transformers(str(path.parent), gguf_file=path.name)
        except Exception as err:  # transformers raises many kinds on unsupported GGUF content
            raise PerseaError(f"{where}: transformers cannot load GGUF {path}: "
                              f"{type(err).__name__}: {_one_line(err)}") from None

    try:
        directory = converted_dir(path, from_gguf)
    except OSError as err:
        raise PerseaError(f"{where}: cannot write the converted model to {cache_root()} "
                          f"({err.strerror or err}); set PERSEA_GGUF_CACHE to a writable "
                          "directory") from None
    model, tok = _load_transformers(str(directory), local_files_only=True)
    return HFModel(name, model, tok, fingerprint_files([path]), chat_template)


def weights_fingerprint(spec, paths=None) -> str | None:
    """The fingerprint `load_teacher(spec, paths).fingerprint` gives, computed without
    loading the model where its source allows (a directory, a GGUF file, a built-in); None
    for a hub id, an endpoint, or a source that is not there (loading says why)."""
    resolve = paths.resolve if paths is not None else (lambda p: Path(p).expanduser())
    if spec.builtin is not None:
        builtins = builtin_models()
        return fingerprint_model_dir(builtins[spec.builtin].path) \
            if spec.builtin in builtins else None
    if spec.path is not None:
        directory = resolve(spec.path)
        return fingerprint_model_dir(directory) if directory.is_dir() else None
    if spec.gguf is not None:
        path = resolve(spec.gguf)
        return fingerprint_files([path]) if path.is_file() else None
    return None  # a hub id needs its commit; an endpoint is cheap to build


def load_teacher(spec, paths=None):
    """Build the model for a `persea.project.TeacherSpec`; relative paths resolve with
    `paths.resolve` (a loaded project, a harvest job), else from the working directory."""
    resolve = paths.resolve if paths is not None else (lambda p: Path(p).expanduser())
    if spec.builtin is not None:
        builtins = builtin_models()
        if spec.builtin not in builtins:
            raise PerseaError(f"teacher {spec.name!r}: unknown builtin {spec.builtin!r}; "
                              f"expected one of: {', '.join(builtins)}")
        return load_hf_dir(spec.name, builtins[spec.builtin].path, spec.chat_template)
    if spec.path is not None:
        return load_hf_dir(spec.name, resolve(spec.path), spec.chat_template)
    if spec.hub is not None:
        return load_hub(spec.name, spec.hub, spec.revision, spec.chat_template)
    if spec.gguf is not None:
        return load_gguf(spec.name, resolve(spec.gguf), spec.chat_template)
    return EndpointModel(spec.name, spec.endpoint, spec.model, spec.api_key_env)
