"""VNF package onboarding: a SOL004 CSAR carrying an ETSI GS NFV-SOL 001 VNFD, read into frozen dataclasses.

Not tosca-parser 2.15: it needs ETSI's SOL001 type files, which no PyPI package ships (tacker: test data);
offline it tries to fetch them from forge.etsi.org while parsing (0.45 s), then fails with an AttributeError.

So this reads the YAML itself (yaml.safe_load only), strictly, for the subset the LCM uses: the VNF node's
identity, Vdu.Compute (virtual_compute, sw_image_data and the sw_image artifact, vdu_profile), an optional
Vdu.VirtualBlockStorage, VduCp (virtual_binding, virtual_link), VnfVirtualLink, and the policies
ScalingAspects, VduInitialDelta, VduScalingAspectDeltas, InstantiationLevels, VduInstantiationLevels.
Layouts: one template, or a top-level template importing a types file and one file per deployment
flavour (each with substitution_mappings). Imports of ETSI's own type files (etsi_nfv_sol001_*, by URL
or path) are skipped: their types are known here by name; any other import must be a file of the package.
Sizes follow TOSCA's scalar-unit.size (MB = 10^6 B, MiB = 2^20 B); memory_mb counts MiB and disk_gb GiB,
rounded up.
"""

from __future__ import annotations

import io
import lzma
import math
import posixpath
import re
import reprlib
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from fractions import Fraction
from typing import Any

import yaml


class PackageError(ValueError):
    """What is wrong with a package, in one line naming the file and node."""

    def __init__(self, message: str) -> None:
        # names come from the package: control characters shown escaped, so it stays one short line
        message = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], message)
        super().__init__(message if len(message) <= 400 else message[:399] + "…")


@dataclass(frozen=True)
class SwImage:
    name: str
    version: str
    disk_format: str
    container_format: str
    file: str | None  # path inside the CSAR; None: the image is not in the package


@dataclass(frozen=True)
class Vdu:
    id: str  # the node template's name
    name: str
    description: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: SwImage | None
    min_instances: int
    max_instances: int
    cps: tuple[str, ...]  # the VduCp nodes bound to this VDU, in template order


@dataclass(frozen=True)
class Cp:
    id: str
    vdu: str
    virtual_link: str | None  # None: an external CP


@dataclass(frozen=True)
class VirtualLink:
    id: str
    description: str


@dataclass(frozen=True)
class ScalingAspect:
    id: str
    name: str
    description: str
    max_scale_level: int
    step_deltas: tuple[str, ...]  # one delta for every step, or one per step
    deltas: dict[str, dict[str, int]]  # delta id -> {vdu id: number of instances}

    def step_delta(self, step: int) -> dict[str, int]:
        """What going from scale level ``step`` to ``step + 1`` adds."""
        if not self.step_deltas:
            return {}
        return self.deltas.get(self.step_deltas[min(step, len(self.step_deltas) - 1)], {})


@dataclass(frozen=True)
class InstantiationLevel:
    id: str
    description: str
    scale_info: dict[str, int]  # aspect id -> scale level
    vdu_instances: dict[str, int]  # vdu id -> number of instances


# the level made of the VduInitialDelta policies when a flavour declares no InstantiationLevels (SOL001
# lets a flavour with a single level leave them out)
IMPLICIT_LEVEL = "default"


@dataclass(frozen=True)
class Flavour:
    id: str
    description: str
    vdus: dict[str, Vdu]
    cps: dict[str, Cp]
    virtual_links: dict[str, VirtualLink]
    aspects: dict[str, ScalingAspect]
    levels: dict[str, InstantiationLevel]
    default_level: str | None

    def instances(self, level: str | None = None,
                  scale_levels: dict[str, int] | None = None) -> dict[str, int]:
        """VMs of each VDU at instantiation level ``level`` (the default one if None), then each aspect
        of ``scale_levels`` moved from the level's scale level to the one given; within vdu_profile."""
        name = self.default_level if level is None else level
        if name is None:
            raise PackageError(f"flavour {self.id}: no default instantiation level; name one of"
                               f" {sorted(self.levels)}")
        lvl = self.levels.get(name)
        if lvl is None:
            raise PackageError(f"flavour {self.id}: no instantiation level {_show(name)}")
        counts = {v: lvl.vdu_instances.get(v, vdu.min_instances) for v, vdu in self.vdus.items()}
        for aspect_id, target in (scale_levels or {}).items():
            aspect = self.aspects.get(aspect_id)
            if aspect is None:
                raise PackageError(f"flavour {self.id}: no scaling aspect {_show(aspect_id)}")
            top = aspect.max_scale_level
            if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= top:
                raise PackageError(f"flavour {self.id}: scale level {_show(target)} of aspect {aspect_id} is"
                                   f" outside 0..{top}")
            base = lvl.scale_info.get(aspect_id, 0)
            sign = 1 if target >= base else -1
            for step in range(min(base, target), max(base, target)):
                for vdu_id, n in aspect.step_delta(step).items():
                    if vdu_id in counts:
                        counts[vdu_id] += sign * n
        return {v: max(vdu.min_instances, min(vdu.max_instances, counts[v])) for v, vdu in self.vdus.items()}


@dataclass(frozen=True)
class Vnfd:
    id: str  # descriptor_id
    provider: str
    product_name: str
    software_version: str
    descriptor_version: str
    vnfm_info: tuple[str, ...]
    flavours: dict[str, Flavour]

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists); ``Vnfd.from_dict`` makes an equal object of it."""
        return _jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> Vnfd:
        try:
            return _vnfd_from(d)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise PackageError(f"stored VNFD is not valid: {type(e).__name__} {e}") from None


def _jsonable(v: Any) -> Any:
    if is_dataclass(v):
        return {f.name: _jsonable(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _vnfd_from(d: dict) -> Vnfd:
    def image(i: dict | None) -> SwImage | None:
        if i is None:
            return None
        return SwImage(i["name"], i["version"], i["disk_format"], i["container_format"], i["file"])

    def vdu(v: dict) -> Vdu:
        return Vdu(v["id"], v["name"], v["description"], v["vcpus"], v["memory_mb"], v["disk_gb"],
                   image(v["image"]), v["min_instances"], v["max_instances"], tuple(v["cps"]))

    def aspect(a: dict) -> ScalingAspect:
        return ScalingAspect(a["id"], a["name"], a["description"], a["max_scale_level"],
                             tuple(a["step_deltas"]), {k: dict(x) for k, x in a["deltas"].items()})

    def flavour(f: dict) -> Flavour:
        return Flavour(
            f["id"], f["description"],
            vdus={k: vdu(v) for k, v in f["vdus"].items()},
            cps={k: Cp(c["id"], c["vdu"], c["virtual_link"]) for k, c in f["cps"].items()},
            virtual_links={k: VirtualLink(x["id"], x["description"]) for k, x in f["virtual_links"].items()},
            aspects={k: aspect(a) for k, a in f["aspects"].items()},
            levels={k: InstantiationLevel(x["id"], x["description"], dict(x["scale_info"]),
                                          dict(x["vdu_instances"])) for k, x in f["levels"].items()},
            default_level=f["default_level"])

    return Vnfd(d["id"], d["provider"], d["product_name"], d["software_version"], d["descriptor_version"],
                tuple(d["vnfm_info"]), {k: flavour(f) for k, f in d["flavours"].items()})


# --- the package (SOL004 CSAR) -------------------------------------------------------------------------

META = "TOSCA-Metadata/TOSCA.meta"
MAX_ENTRIES = 10_000
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, struct.error, EOFError,
               NotImplementedError, RuntimeError, OSError, OverflowError, ValueError)


def read_package(data: bytes, max_size: int = 64 * 2**20) -> tuple[Vnfd, dict[str, bytes]]:
    """The VNFD, and the package's artifact files by path (images etc., only those the VNFD names)."""
    if not isinstance(data, (bytes, bytearray)):
        raise PackageError("a VNF package is bytes (a zip file)")
    if len(data) > max_size:
        raise PackageError(f"the package is {len(data)} bytes, more than the {max_size} allowed")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as e:
        raise PackageError(f"the package is not a zip file (a CSAR is one): {e}") from None
    with zf:
        reader = _ZipReader(zf, max_size)
        vnfd = _Parser(reader.entry(), reader.text).vnfd()
        artifacts: dict[str, bytes] = {}
        for flavour in vnfd.flavours.values():
            for vdu in flavour.vdus.values():
                path = vdu.image.file if vdu.image else None
                if path is None or path in artifacts:
                    continue
                if path not in reader.infos:
                    raise PackageError(f"{path}: the image of VDU {vdu.id} (flavour {flavour.id}) is not in"
                                       " the package")
                artifacts[path] = reader.read(path)
    return vnfd, artifacts


def read_vnfd_yaml(text: str, files: dict[str, str] | None = None) -> Vnfd:
    """The VNFD of service template ``text`` at the root of a package holding ``files``: the templates it
    imports, by path relative to it."""
    if not isinstance(text, str):
        raise PackageError("a VNFD is YAML text")
    texts = dict(files or {})
    entry = "<vnfd>"

    def load(path: str) -> str | None:
        body = text if path == entry else texts.get(path)
        if body is not None and not isinstance(body, str):
            raise PackageError(f"{path}: not text")
        return body

    return _Parser(entry, load).vnfd()


def _safe_path(name: str, where: str) -> str:
    """``name`` if it stays inside the package: relative, no '..', '.' or empty parts, no backslash."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or re.match(r"[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise PackageError(f"{where}: unsafe path {_show(name)} (it must stay inside the package)")
    return name


class _ZipReader:
    def __init__(self, zf: zipfile.ZipFile, max_size: int) -> None:
        self.zf = zf
        self.budget = max_size  # bytes left to decompress, whatever the headers claim
        try:
            infos = zf.infolist()
        except _ZIP_ERRORS as e:
            raise PackageError(f"the package is not a readable zip file: {e}") from None
        if len(infos) > MAX_ENTRIES:
            raise PackageError(f"the package has {len(infos)} files, more than the {MAX_ENTRIES} allowed")
        self.infos: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            if not info.filename:  # a damaged header; ZipInfo.is_dir() would fail on it
                raise PackageError("the package holds a file with no name")
            if info.is_dir():
                _safe_path(info.filename.rstrip("/"), "the package")
                continue
            name = _safe_path(info.filename, "the package")
            if name in self.infos:
                raise PackageError(f"the package holds {name} twice")
            if info.flag_bits & 0x1:
                raise PackageError(f"{name}: encrypted (a CSAR's files are not)")
            declared += info.file_size
            if declared > max_size:
                raise PackageError(f"the package unpacks to more than the {max_size} bytes allowed")
            self.infos[name] = info

    def read(self, name: str) -> bytes:
        info = self.infos[name]
        out = bytearray()
        try:
            with self.zf.open(info) as f:
                while chunk := f.read(1 << 16):
                    out += chunk
                    if len(out) > info.file_size or len(out) > self.budget:
                        raise PackageError(f"{name}: unpacks to more than its header says, or past the"
                                           " size allowed")
        except _ZIP_ERRORS as e:
            if isinstance(e, PackageError):
                raise
            raise PackageError(f"{name}: cannot be unpacked: {e}") from None
        self.budget -= len(out)
        return bytes(out)

    def text(self, name: str) -> str | None:
        if name not in self.infos:
            return None
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PackageError(f"{name}: not UTF-8 text") from None

    def entry(self) -> str:
        """The main service template: TOSCA.meta's Entry-Definitions, else the root's only YAML file."""
        meta = self.text(META)
        if meta is None:
            roots = [n for n in self.infos if "/" not in n and n.lower().endswith((".yaml", ".yml"))]
            if len(roots) != 1:
                raise PackageError(f"no {META} and {len(roots)} .yaml files at the package's root"
                                   " (without TOSCA.meta there must be exactly one)")
            return roots[0]
        entry = None
        for line in meta.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "Entry-Definitions":
                entry = value.strip()
                break
        if not entry:
            raise PackageError(f"{META}: no Entry-Definitions")
        entry = _safe_path(entry, f"{META}, Entry-Definitions")
        if entry not in self.infos:
            raise PackageError(f"{META}: Entry-Definitions {entry} is not in the package")
        return entry


# --- the VNFD (SOL001) ---------------------------------------------------------------------------------

VNF = "tosca.nodes.nfv.VNF"
VDU = "tosca.nodes.nfv.Vdu.Compute"
STORAGE = "tosca.nodes.nfv.Vdu.VirtualBlockStorage"
VDU_CP = "tosca.nodes.nfv.VduCp"
VL = "tosca.nodes.nfv.VnfVirtualLink"
ASPECTS = "tosca.policies.nfv.ScalingAspects"
INITIAL_DELTA = "tosca.policies.nfv.VduInitialDelta"
ASPECT_DELTAS = "tosca.policies.nfv.VduScalingAspectDeltas"
LEVELS = "tosca.policies.nfv.InstantiationLevels"
VDU_LEVELS = "tosca.policies.nfv.VduInstantiationLevels"
KNOWN = {VNF, VDU, STORAGE, VDU_CP, VL, ASPECTS, INITIAL_DELTA, ASPECT_DELTAS, LEVELS, VDU_LEVELS}
IDENTITY = ("descriptor_id", "provider", "product_name", "software_version", "descriptor_version")
MAX_FILES = 100  # service templates in one VNFD
MAX_INT = 2**31 - 1

_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30,
          "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 60, 60


def _show(v: Any) -> str:
    """A value from the package or a caller, shown short: YAML aliases can make huge nested values."""
    return _REPR.repr(v)


def _same(a: Any, b: Any, limit: int = 10_000) -> bool:
    """a == b, looking at ``limit`` values at most (then: not the same), as aliases can make huge ones."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        limit -= 1
        if limit < 0 or type(x) is not type(y):
            return False
        if x is y:
            continue
        if isinstance(x, dict):
            if x.keys() != y.keys():
                return False
            todo += [(x[k], y[k]) for k in x]
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            todo += list(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def _map(v: Any, where: str, what: str, required: bool = False) -> dict:
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise PackageError(f"{where}: {what} is {'missing' if v is None else 'not a mapping'}")
    for k in v:
        if not isinstance(k, str):
            raise PackageError(f"{where}: {what} has a key {_show(k)} that is not a string")
    return v


def _list(v: Any, where: str, what: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise PackageError(f"{where}: {what} is not a list")
    return v


def _str(v: Any, where: str, what: str, default: str | None = None) -> str:
    if v is None and default is not None:
        return default
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # versions such as 1.0 read as numbers
    raise PackageError(f"{where}: {what} is {'missing' if v is None else f'not a string ({_show(v)})'}")


def _int(v: Any, where: str, what: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PackageError(f"{where}: {what} is {'missing' if v is None else f'not an integer ({_show(v)})'}")
    if not minimum <= v <= MAX_INT:
        raise PackageError(f"{where}: {what} {v} is outside {minimum}..{MAX_INT}")
    return v


def _size(v: Any, where: str, what: str) -> int:
    """Bytes of a TOSCA scalar-unit.size such as '512 MiB' or '1 GB'."""
    m = _SIZE.fullmatch(v) if isinstance(v, str) else None
    if m is None or m.group(2).lower() not in _UNITS:
        raise PackageError(f"{where}: {what} {_show(v)} is not a size such as '512 MiB' or '1 GB'")
    n = math.ceil(Fraction(m.group(1)) * _UNITS[m.group(2).lower()])
    if n >= 2**63:
        raise PackageError(f"{where}: {what} {_show(v)} is too large")
    return n


def _ceil_div(n: int, unit: int) -> int:
    return -(-n // unit)


def _get_input(v: Any, inputs: dict) -> Any:
    """A property's value, ``{get_input: x}`` read as input x's default (None if it has none)."""
    if isinstance(v, dict) and len(v) == 1 and "get_input" in v:
        spec = inputs.get(v["get_input"]) if isinstance(v["get_input"], str) else None
        return spec.get("default") if isinstance(spec, dict) else None
    return v


def _import_file(item: Any) -> Any:
    """The file of an import: ``path``, ``{file: path}``, or TOSCA 1.0's ``{name: path}`` or
    ``{name: {file: path}}``."""
    if isinstance(item, dict):
        if "file" in item:
            return item["file"]
        if len(item) != 1:
            return None
        item = next(iter(item.values()))
        return item.get("file") if isinstance(item, dict) else item
    return item


def _requirements(node: dict, where: str) -> list[tuple[str, str]]:
    """(name, target node) of a node template's requirements, short or long form."""
    raw = node.get("requirements")
    items = list(_map(raw, where, "requirements").items()) if isinstance(raw, dict) else []
    if not isinstance(raw, dict):
        for item in _list(raw, where, "requirements"):
            items += list(_map(item, where, "a requirement", required=True).items())
    out = []
    for name, target in items:
        if isinstance(target, dict):
            target = target.get("node")
        if not isinstance(target, str):
            raise PackageError(f"{where}: requirement {name} names no node")
        out.append((name, target))
    return out


class _Parser:
    def __init__(self, entry: str, load: Callable[[str], str | None]) -> None:
        self.entry, self.load = entry, load
        self.docs: dict[str, dict] = {}  # service templates, in import order
        self.node_types: dict[str, tuple[str, dict]] = {}  # name -> (file, definition)
        self.policy_types: dict[str, tuple[str, dict]] = {}

    # ---- files
    def _read(self, path: str, where: str) -> dict:
        text = self.load(path)
        if text is None:
            raise PackageError(f"{where}: {path} is not in the package")
        try:
            doc = yaml.safe_load(text)
        except yaml.reader.ReaderError as e:
            raise PackageError(f"{path}: not valid YAML: character #x{e.character:04x} at position"
                               f" {e.position} is not allowed") from None
        except yaml.MarkedYAMLError as e:
            mark = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
            raise PackageError(f"{path}: not valid YAML: {e.problem or e.context}{mark}") from None
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
            raise PackageError(f"{path}: not valid YAML: {type(e).__name__} {e}".replace("\n", " ")) from None
        if not isinstance(doc, dict):
            raise PackageError(f"{path}: not a YAML mapping (a TOSCA service template is one)")
        return _map(doc, path, "the template")

    def _load_all(self) -> None:
        todo = [(self.entry, "the package")]
        while todo:
            path, where = todo.pop(0)
            if path in self.docs:
                continue
            if len(self.docs) >= MAX_FILES:
                raise PackageError(f"{path}: more than {MAX_FILES} templates imported")
            doc = self.docs[path] = self._read(path, where)
            for item in _list(doc.get("imports"), path, "imports"):
                ref = _import_file(item)
                if not isinstance(ref, str) or not ref:
                    raise PackageError(f"{path}: import {_show(item)} names no file")
                if posixpath.basename(ref).startswith("etsi_nfv_sol001_"):
                    continue  # ETSI's own types: known here by name
                if "://" in ref:
                    raise PackageError(f"{path}: imports {ref} by URL (only the package's own files and"
                                       " ETSI's SOL001 types can be imported)")
                where = f"{path}, import {ref}"
                todo.append((self._resolve(path, ref, where), where))
            for key, registry in (("node_types", self.node_types), ("policy_types", self.policy_types)):
                for name, body in _map(doc.get(key), path, key).items():
                    body = _map(body, path, f"{key} {name}", required=True)
                    if name in registry and not _same(registry[name][1], body):
                        raise PackageError(f"{path}: type {name} is also defined differently in"
                                           f" {registry[name][0]}")
                    registry[name] = (path, body)

    @staticmethod
    def _resolve(base: str, ref: str, where: str) -> str:
        """Path in the package of ``ref``, relative to file ``base``."""
        if ref.startswith("/") or "\\" in ref:
            raise PackageError(f"{where}: unsafe path {ref!r}")
        path = posixpath.normpath(posixpath.join(posixpath.dirname(base), ref))
        if path == ".." or path.startswith("../"):
            raise PackageError(f"{where}: path {ref!r} leaves the package")
        return _safe_path(path, where)

    # ---- types
    def _chain(self, type_name: Any, registry: dict, where: str) -> list[dict]:
        """The definitions of ``type_name`` and its ancestors in the package, nearest first; then the
        SOL001 or other ``tosca.`` type they derive from, as {"name": ...}."""
        out: list[dict] = []
        name = type_name
        while True:
            if not isinstance(name, str):
                if not out:
                    problem = "no type" if name is None else f"type {_show(name)} is not a name"
                    raise PackageError(f"{where}: {problem}")
                raise PackageError(f"{where}: type {type_name} derives from no SOL001 type (derived_from"
                                   f" {_show(name)})")
            if name in KNOWN or (name.startswith("tosca.") and name not in registry):
                return [*out, {"name": name}]
            if name not in registry:
                raise PackageError(f"{where}: type {name} is defined nowhere in the package")
            if len(out) > 20:
                raise PackageError(f"{where}: type {type_name} derives from itself")
            body = registry[name][1]
            out.append(body)
            name = body.get("derived_from")

    def _base(self, type_name: Any, registry: dict, where: str) -> str:
        return self._chain(type_name, registry, where)[-1]["name"]

    def _props(self, node: dict, inputs: dict, where: str) -> dict:
        """A node's properties: its own, ``get_input`` read, over its types' defaults."""
        merged: dict = {}
        for body in reversed(self._chain(node.get("type"), self.node_types, where)[:-1]):
            for name, spec in _map(body.get("properties"), where, "a type's properties").items():
                if isinstance(spec, dict) and "default" in spec:
                    merged[name] = spec["default"]
        for name, value in _map(node.get("properties"), where, "properties").items():
            value = _get_input(value, inputs)
            if value is not None:
                merged[name] = value
        return merged

    # ---- the VNFD
    def vnfd(self) -> Vnfd:
        self._load_all()
        vnf_nodes: dict[str, tuple[str, dict, dict]] = {}  # file -> (node name, node, inputs)
        flavour_files = []
        for path, doc in self.docs.items():
            tt = _map(doc.get("topology_template"), path, "topology_template")
            inputs = _map(tt.get("inputs"), path, "inputs")
            nodes = _map(tt.get("node_templates"), path, "node_templates")
            bases = {}
            for name, node in nodes.items():
                node = _map(node, path, f"node {name}", required=True)
                bases[name] = self._base(node.get("type"), self.node_types, f"{path}, node {name}")
                if bases[name] == VNF:
                    if path in vnf_nodes:
                        raise PackageError(f"{path}: two {VNF} nodes ({vnf_nodes[path][0]}, {name})")
                    vnf_nodes[path] = (name, node, inputs)
            if "substitution_mappings" in tt or VDU in bases.values():
                flavour_files.append((path, tt, inputs, nodes, bases))
        if not vnf_nodes:
            raise PackageError(f"{self.entry}: no node of type {VNF}")
        if not flavour_files:
            raise PackageError(f"{self.entry}: no deployment flavour (no template with {VDU} nodes)")
        # the identity: the entry's VNF node (the top-level template), else the first flavour's
        id_path = self.entry
        if id_path not in vnf_nodes:
            id_path = next((p for p, *_ in flavour_files if p in vnf_nodes), next(iter(vnf_nodes)))
        name, node, inputs = vnf_nodes[id_path]
        where = f"{id_path}, node {name}"
        props = self._props(node, inputs, where)
        ident = {k: _str(props.get(k), where, k) for k in IDENTITY}
        vnfm_info = _list(props.get("vnfm_info"), where, "vnfm_info")
        flavours: dict[str, Flavour] = {}
        for path, tt, inputs, nodes, bases in flavour_files:
            if path not in vnf_nodes:
                raise PackageError(f"{path}: a deployment flavour's template without a {VNF} node")
            flavour = self._flavour(path, tt, inputs, nodes, bases, vnf_nodes[path])
            if flavour.id in flavours:
                raise PackageError(f"{path}: deployment flavour {flavour.id} is defined twice")
            flavours[flavour.id] = flavour
        return Vnfd(id=ident["descriptor_id"], provider=ident["provider"],
                    product_name=ident["product_name"], software_version=ident["software_version"],
                    descriptor_version=ident["descriptor_version"],
                    vnfm_info=tuple(_str(x, where, "vnfm_info entry") for x in vnfm_info), flavours=flavours)

    def _flavour_id(self, path: str, tt: dict, props: dict, node: dict, where: str) -> tuple[str, str]:
        sub = _map(tt.get("substitution_mappings"), path, "substitution_mappings")
        fid = _map(sub.get("properties"), path, "substitution_mappings properties").get("flavour_id")
        if fid is None:
            fid = props.get("flavour_id")
        if fid is None:  # a type that allows one flavour only
            for body in self._chain(node.get("type"), self.node_types, where)[:-1]:
                spec = _map(body.get("properties"), where, "a type's properties").get("flavour_id")
                constraints = spec.get("constraints") if isinstance(spec, dict) else None
                for c in _list(constraints, where, "constraints"):
                    values = c.get("valid_values") if isinstance(c, dict) else None
                    if isinstance(values, list) and len(values) == 1:
                        fid = values[0]
        if fid is None:
            raise PackageError(f"{path}: no flavour_id (substitution_mappings properties or the VNF node)")
        return _str(fid, where, "flavour_id"), _str(props.get("flavour_description"), where,
                                                    "flavour_description", "")

    def _flavour(self, path: str, tt: dict, inputs: dict, nodes: dict, bases: dict,
                 vnf: tuple[str, dict, dict]) -> Flavour:
        vnf_where = f"{path}, node {vnf[0]}"
        fid, fdesc = self._flavour_id(path, tt, self._props(vnf[1], inputs, vnf_where), vnf[1], vnf_where)
        at = {name: f"{path}, node {name}" for name in nodes}
        storage = {n: self._storage(path, nodes[n], at[n]) for n, b in bases.items() if b == STORAGE}
        links = {n: VirtualLink(n, self._vl_description(nodes[n], at[n]))
                 for n, b in bases.items() if b == VL}
        cps: dict[str, Cp] = {}
        for name, base in bases.items():
            if base != VDU_CP:
                continue
            binding = link = None
            for req, target in _requirements(nodes[name], at[name]):
                if req == "virtual_binding":
                    if bases.get(target) != VDU:
                        raise PackageError(f"{at[name]}: bound (virtual_binding) to {target}, which is not"
                                           " a VDU of this flavour")
                    binding = target
                elif req == "virtual_link":
                    if bases.get(target) != VL:
                        raise PackageError(f"{at[name]}: virtual_link to {target}, which is not a {VL} of"
                                           " this flavour")
                    link = target
            if binding is None:
                raise PackageError(f"{at[name]}: a VduCp without virtual_binding")
            cps[name] = Cp(name, binding, link)
        vdus = {n: self._vdu(path, n, nodes[n], at[n], storage, bases, cps)
                for n, b in bases.items() if b == VDU}
        if not vdus:
            raise PackageError(f"{path}: deployment flavour {fid} has no VDU ({VDU} node)")
        aspects, levels, default = self._policies(path, tt, vdus)
        return Flavour(fid, fdesc, vdus, cps, links, aspects, levels, default)

    @staticmethod
    def _vl_description(node: dict, where: str) -> str:
        props = _map(node.get("properties"), where, "properties")
        return _str(props.get("description", node.get("description")), where, "description", "")

    def _image(self, path: str, node: dict, props: dict, where: str) -> SwImage | None:
        data = props.get("sw_image_data")
        if data is None:
            return None
        data = _map(data, where, "sw_image_data")
        art = _map(node.get("artifacts"), where, "artifacts").get("sw_image")
        file = art.get("file") if isinstance(art, dict) else art
        if file is not None:
            file = _str(file, where, "the sw_image artifact's file")
            file = None if "://" in file else self._resolve(path, file, f"{where}, artifact sw_image")
        return SwImage(name=_str(data.get("name"), where, "sw_image_data name"),
                       version=_str(data.get("version"), where, "sw_image_data version"),
                       disk_format=_str(data.get("disk_format"), where, "sw_image_data disk_format"),
                       container_format=_str(data.get("container_format"), where,
                                             "sw_image_data container_format"),
                       file=file)

    def _storage(self, path: str, node: dict, where: str) -> tuple[int, SwImage | None]:
        props = _map(node.get("properties"), where, "properties")
        data = _map(props.get("virtual_block_storage_data"), where, "virtual_block_storage_data",
                    required=True)
        size = _size(data.get("size_of_storage"), where, "size_of_storage")
        return size, self._image(path, node, props, where)

    def _vdu(self, path: str, name: str, node: dict, where: str, storage: dict, bases: dict,
             cps: dict[str, Cp]) -> Vdu:
        props = _map(node.get("properties"), where, "properties")
        profile = _map(props.get("vdu_profile"), where, "vdu_profile", required=True)
        lo = _int(profile.get("min_number_of_instances"), where, "min_number_of_instances")
        hi = _int(profile.get("max_number_of_instances"), where, "max_number_of_instances",
                  minimum=max(lo, 1))
        caps = _map(node.get("capabilities"), where, "capabilities")
        vc = _map(caps.get("virtual_compute"), where, "capability virtual_compute", required=True)
        vcp = _map(vc.get("properties"), where, "virtual_compute properties", required=True)
        cpu = _map(vcp.get("virtual_cpu"), where, "virtual_cpu", required=True)
        mem = _map(vcp.get("virtual_memory"), where, "virtual_memory", required=True)
        memory = _size(mem.get("virtual_mem_size"), where, "virtual_mem_size")
        if memory <= 0:
            raise PackageError(f"{where}: virtual_mem_size is 0")
        local = _list(vcp.get("virtual_local_storage"), where, "virtual_local_storage")
        disk = sum(_size(_map(s, where, "virtual_local_storage entry", required=True).get("size_of_storage"),
                         where, "size_of_storage") for s in local)
        image = self._image(path, node, props, where)
        attached = []
        for req, target in _requirements(node, where):
            if req == "virtual_storage":
                if bases.get(target) != STORAGE:
                    raise PackageError(f"{where}: virtual_storage {target} is not a {STORAGE} of this"
                                       " flavour")
                attached.append(storage[target])
        if not local and attached:  # booted from a volume: its size, and its image
            disk = sum(size for size, _ in attached)
        if image is None:
            image = next((img for _, img in attached if img is not None), None)
        if not local and not attached and props.get("sw_image_data") is not None:
            min_disk = _map(props["sw_image_data"], where, "sw_image_data").get("min_disk")
            disk = 0 if min_disk is None else _size(min_disk, where, "sw_image_data min_disk")
        return Vdu(id=name, name=_str(props.get("name"), where, "name"),
                   description=_str(props.get("description"), where, "description", ""),
                   vcpus=_int(cpu.get("num_virtual_cpu"), where, "num_virtual_cpu", minimum=1),
                   memory_mb=_ceil_div(memory, 2**20), disk_gb=_ceil_div(disk, 2**30), image=image,
                   min_instances=lo, max_instances=hi, cps=tuple(c for c in cps if cps[c].vdu == name))

    # ---- policies
    def _policies(self, path: str, tt: dict, vdus: dict[str, Vdu]
                  ) -> tuple[dict[str, ScalingAspect], dict[str, InstantiationLevel], str | None]:
        raw = tt.get("policies")
        items = list(_map(raw, path, "policies").items()) if isinstance(raw, dict) else []
        if not isinstance(raw, dict):
            for item in _list(raw, path, "policies"):
                items += list(_map(item, path, "a policy", required=True).items())
        by_type: dict[str, list[tuple[str, dict, list[str]]]] = {t: [] for t in KNOWN}
        for name, body in items:
            where = f"{path}, policy {name}"
            body = _map(body, where, "the policy", required=True)
            base = self._base(body.get("type"), self.policy_types, where)
            if base not in by_type:
                continue  # affinity rules and the like: nothing the LCM sizes
            targets = [_str(t, where, "a target") for t in _list(body.get("targets"), where, "targets")]
            for t in targets:
                if base != ASPECTS and base != LEVELS and t not in vdus:
                    raise PackageError(f"{where}: target {t} is not a VDU of this flavour")
            by_type[base].append((where, _map(body.get("properties"), where, "properties"), targets))

        aspects: dict[str, dict] = {}
        for where, props, _ in by_type[ASPECTS]:
            for aid, a in _map(props.get("aspects"), where, "aspects", required=True).items():
                if aid in aspects:
                    raise PackageError(f"{where}: aspect {aid} is defined twice")
                a = _map(a, where, f"aspect {aid}", required=True)
                top = _int(a.get("max_scale_level"), where, f"aspect {aid} max_scale_level")
                steps = tuple(_str(s, where, f"aspect {aid} step_deltas entry")
                              for s in _list(a.get("step_deltas"), where, f"aspect {aid} step_deltas"))
                if len(steps) > 1 and len(steps) != top:
                    raise PackageError(f"{where}: aspect {aid} has {len(steps)} step_deltas for"
                                       f" max_scale_level {top} (one for all steps, or one per step)")
                aspects[aid] = {"id": aid, "name": _str(a.get("name"), where, f"aspect {aid} name", aid),
                                "description": _str(a.get("description"), where, f"aspect {aid} description",
                                                    ""),
                                "max_scale_level": top, "step_deltas": steps, "deltas": {}}
        for where, props, targets in by_type[ASPECT_DELTAS]:
            aid = _str(props.get("aspect"), where, "aspect")
            if aid not in aspects:
                raise PackageError(f"{where}: aspect {aid} is not defined (ScalingAspects)")
            for did, delta in _map(props.get("deltas"), where, "deltas", required=True).items():
                if did not in aspects[aid]["step_deltas"]:
                    raise PackageError(f"{where}: delta {did} is not one of aspect {aid}'s step_deltas")
                n = _int(_map(delta, where, f"delta {did}", required=True).get("number_of_instances"), where,
                         f"delta {did} number_of_instances")
                aspects[aid]["deltas"].setdefault(did, {}).update({t: n for t in targets})
        scaling = {aid: ScalingAspect(**a) for aid, a in aspects.items()}

        initial = {v: vdu.min_instances for v, vdu in vdus.items()}
        for where, props, targets in by_type[INITIAL_DELTA]:
            delta = _map(props.get("initial_delta"), where, "initial_delta", required=True)
            n = _int(delta.get("number_of_instances"), where, "initial_delta number_of_instances")
            initial.update({t: n for t in targets})

        if len(by_type[LEVELS]) > 1:
            raise PackageError(f"{by_type[LEVELS][1][0]}: a second {LEVELS} policy in one flavour")
        if not by_type[LEVELS]:
            if by_type[VDU_LEVELS]:
                raise PackageError(f"{by_type[VDU_LEVELS][0][0]}: {VDU_LEVELS} without {LEVELS}")
            level = InstantiationLevel(IMPLICIT_LEVEL, "the initial deltas (the VNFD declares no levels)",
                                       {a: 0 for a in scaling}, initial)
            return scaling, {IMPLICIT_LEVEL: level}, IMPLICIT_LEVEL
        where, props, _ = by_type[LEVELS][0]
        raw_levels = _map(props.get("levels"), where, "levels", required=True)
        if not raw_levels:
            raise PackageError(f"{where}: no levels")
        counts: dict[str, dict[str, int]] = {lid: dict(initial) for lid in raw_levels}
        for vwhere, vprops, targets in by_type[VDU_LEVELS]:
            for lid, spec in _map(vprops.get("levels"), vwhere, "levels", required=True).items():
                if lid not in counts:
                    raise PackageError(f"{vwhere}: level {lid} is not an instantiation level ({LEVELS})")
                n = _int(_map(spec, vwhere, f"level {lid}", required=True).get("number_of_instances"), vwhere,
                         f"level {lid} number_of_instances")
                counts[lid].update({t: n for t in targets})
        levels = {}
        for lid, spec in raw_levels.items():
            spec = _map(spec, where, f"level {lid}", required=True)
            scale = {}
            for aid, info in _map(spec.get("scale_info"), where, f"level {lid} scale_info").items():
                if aid not in scaling:
                    raise PackageError(f"{where}: level {lid} scales aspect {aid}, which is not defined")
                s = _int(_map(info, where, f"level {lid} scale_info {aid}", required=True).get("scale_level"),
                         where, f"level {lid} scale_level of {aid}")
                if s > scaling[aid].max_scale_level:
                    raise PackageError(f"{where}: level {lid} puts aspect {aid} at {s}, past its"
                                       f" max_scale_level {scaling[aid].max_scale_level}")
                scale[aid] = s
            desc = _str(spec.get("description"), where, f"level {lid} description", "")
            levels[lid] = InstantiationLevel(lid, desc, scale, counts[lid])
        default = props.get("default_level")
        if default is None:
            default = next(iter(levels)) if len(levels) == 1 else None
        elif _str(default, where, "default_level") not in levels:
            raise PackageError(f"{where}: default_level {default} is not one of the levels")
        return scaling, levels, default
