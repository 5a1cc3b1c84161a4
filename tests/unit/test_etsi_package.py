"""VNF package onboarding (esc.etsi.package): the sample CSARs read field by field, instances at
levels and scale levels, the stored form, and bad packages refused with one clear line."""

from __future__ import annotations

import copy
import io
import json
import struct
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esc.etsi.package import (
    Cp,
    Flavour,
    InstantiationLevel,
    PackageError,
    ScalingAspect,
    SwImage,
    Vdu,
    VirtualLink,
    Vnfd,
    read_package,
    read_vnfd_yaml,
)
from esc.etsi.samples import (
    SAMPLE_ASPECT,
    SAMPLE_VNFD_ID,
    image_bytes,
    image_file,
    make_zip,
    sample_csar,
    sample_csar_files,
    sample_vnfd_files,
    sample_vnfd_yaml,
    tosca_meta,
)

ENTRY = "Definitions/sample.vnfd.yaml"  # of the "single" layout


def expected_sample() -> Vnfd:
    """Every field of the sample (2 VDUs), written out by hand."""
    def vdu(n: int, name: str, version: str, memory: int, disk: int) -> Vdu:
        return Vdu(id=f"VDU{n}", name=name, description=f"VDU {n}: {name}", vcpus=1, memory_mb=memory,
                   disk_gb=disk, image=SwImage(name=name, version=version, disk_format="qcow2",
                                               container_format="bare", file=f"Files/images/{name}.qcow2"),
                   min_instances=1, max_instances=5, cps=(f"VDU{n}_CP1", f"VDU{n}_CP2"))

    flavour = Flavour(
        id="simple", description="The simple flavour",
        vdus={"VDU1": vdu(1, "cirros", "0.6.2", 512, 1), "VDU2": vdu(2, "web", "1.0", 1024, 2)},
        cps={"VDU1_CP1": Cp("VDU1_CP1", "VDU1", None), "VDU1_CP2": Cp("VDU1_CP2", "VDU1", "internalVL1"),
             "VDU2_CP1": Cp("VDU2_CP1", "VDU2", None), "VDU2_CP2": Cp("VDU2_CP2", "VDU2", "internalVL1")},
        virtual_links={"internalVL1": VirtualLink("internalVL1", "Internal network")},
        aspects={"worker": ScalingAspect(id="worker", name="worker aspect",
                                         description="adds one VDU2 per step", max_scale_level=3,
                                         step_deltas=("delta_1",), deltas={"delta_1": {"VDU2": 1}})},
        levels={"default": InstantiationLevel("default", "one of each", {"worker": 0},
                                              {"VDU1": 1, "VDU2": 1}),
                "big": InstantiationLevel("big", "two of each", {"worker": 1}, {"VDU1": 2, "VDU2": 2})},
        default_level="default")
    return Vnfd(id=SAMPLE_VNFD_ID, provider="ESC", product_name="Sample VNF", software_version="1.0",
                descriptor_version="1.0", vnfm_info=("ESC",), flavours={"simple": flavour})


def error(fn: Callable[..., Any], *args: Any, **kw: Any) -> str:
    """The PackageError's message, which must be one line."""
    with pytest.raises(PackageError) as e:
        fn(*args, **kw)
    message = str(e.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def sample_doc() -> dict:
    return yaml.safe_load(sample_vnfd_yaml())


def vnfd_with(change: Callable[[dict], object]) -> str:
    """The single-template sample, changed."""
    doc = sample_doc()
    change(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def nodes(doc: dict) -> dict:
    return doc["topology_template"]["node_templates"]


def policy(doc: dict, name: str) -> dict:
    return next(p[name] for p in doc["topology_template"]["policies"] if name in p)


# --- the sample ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["split", "single", "root"])
def test_the_sample_package_reads_field_by_field(layout: str) -> None:
    vnfd, artifacts = read_package(sample_csar(layout=layout))
    assert vnfd == expected_sample()
    assert artifacts == {image_file(1): image_bytes(1), image_file(2): image_bytes(2)}


def test_a_template_alone_and_with_its_imported_files() -> None:
    assert read_vnfd_yaml(sample_vnfd_yaml()) == expected_sample()
    files = sample_vnfd_files(folder="")
    top = files.pop("sample_top.vnfd.yaml")
    assert read_vnfd_yaml(top, files) == expected_sample()


def test_only_the_artifacts_the_vnfd_names_are_returned() -> None:
    files = sample_csar_files(layout="single")
    files["Files/images/unused.qcow2"] = b"x" * 100
    files["Scripts/install.sh"] = "#!/bin/sh\n"
    files["manifest.mf"] = "metadata:\n"
    _, artifacts = read_package(make_zip(files))
    assert sorted(artifacts) == [image_file(1), image_file(2)]


def test_more_vdus_and_flavours() -> None:
    vnfd, artifacts = read_package(sample_csar(3, flavours=("simple", "large")))
    assert list(vnfd.flavours) == ["simple", "large"]
    large = vnfd.flavours["large"]
    assert large.description == "The large flavour"
    assert list(large.vdus) == ["VDU1", "VDU2", "VDU3"]
    assert large.vdus["VDU3"].image == SwImage("vdu3", "1.0", "qcow2", "bare", "Files/images/vdu3.qcow2")
    assert large.instances("big") == {"VDU1": 2, "VDU2": 2, "VDU3": 2}
    assert len(artifacts) == 3
    one = read_vnfd_yaml(sample_vnfd_yaml(1)).flavours["simple"]
    assert one.aspects["worker"].deltas == {"delta_1": {"VDU1": 1}}
    assert one.instances(None, {"worker": 2}) == {"VDU1": 3}


def test_a_flavour_id_from_the_vnf_node_or_its_type() -> None:
    def no_mapping_properties(d: dict) -> None:
        del d["topology_template"]["substitution_mappings"]["properties"]
        nodes(d)["VNF"]["properties"]["flavour_id"] = "other"
        d["node_types"]["esc.sample.VNF"]["properties"]["flavour_id"]["constraints"] = [
            {"valid_values": ["other"]}]

    assert list(read_vnfd_yaml(vnfd_with(no_mapping_properties)).flavours) == ["other"]

    def only_the_type(d: dict) -> None:
        no_mapping_properties(d)
        del nodes(d)["VNF"]["properties"]["flavour_id"]

    assert list(read_vnfd_yaml(vnfd_with(only_the_type)).flavours) == ["other"]


def test_get_input_takes_the_inputs_default() -> None:
    def by_input(d: dict) -> None:
        d["topology_template"]["inputs"]["provider"]["default"] = "Someone"
        nodes(d)["VNF"]["properties"]["provider"] = {"get_input": "provider"}

    assert read_vnfd_yaml(vnfd_with(by_input)).provider == "Someone"


def test_sizes_follow_tosca_units() -> None:
    def sizes(memory: str, disk: str) -> tuple[int, int]:
        def change(d: dict) -> None:
            vc = nodes(d)["VDU1"]["capabilities"]["virtual_compute"]["properties"]
            vc["virtual_memory"]["virtual_mem_size"] = memory
            vc["virtual_local_storage"] = [{"size_of_storage": disk}]
        vdu = read_vnfd_yaml(vnfd_with(change)).flavours["simple"].vdus["VDU1"]
        return vdu.memory_mb, vdu.disk_gb

    assert sizes("1 GB", "10 GB") == (954, 10)  # 10^9 B: rounded up to MiB, GiB
    assert sizes("2 GiB", "1 TiB") == (2048, 1024)
    assert sizes("512MB", "1.5 gib") == (489, 2)
    assert sizes("4096 kB", "0 B") == (4, 0)


def test_the_disk_of_a_vdu_booted_from_a_volume_or_without_local_storage() -> None:
    def volume(d: dict) -> None:
        vdu = nodes(d)["VDU1"]
        del vdu["capabilities"]["virtual_compute"]["properties"]["virtual_local_storage"]
        image = vdu["properties"].pop("sw_image_data")
        nodes(d)["VirtualStorage"] = {
            "type": "tosca.nodes.nfv.Vdu.VirtualBlockStorage",
            "properties": {"virtual_block_storage_data": {"size_of_storage": "3 GiB"},
                           "sw_image_data": image},
            "artifacts": vdu.pop("artifacts"),
        }
        vdu["requirements"] = [{"virtual_storage": "VirtualStorage"}]
        del nodes(d)["VDU2"]["capabilities"]["virtual_compute"]["properties"]["virtual_local_storage"]

    flavour = read_vnfd_yaml(vnfd_with(volume)).flavours["simple"]
    assert flavour.vdus["VDU1"].disk_gb == 3
    assert flavour.vdus["VDU1"].image == expected_sample().flavours["simple"].vdus["VDU1"].image
    assert flavour.vdus["VDU2"].disk_gb == 1  # the image's min_disk


# --- instances ----------------------------------------------------------------------------------


def test_instances_at_levels_and_scale_levels() -> None:
    flavour = expected_sample().flavours["simple"]
    assert flavour.instances() == {"VDU1": 1, "VDU2": 1}
    assert flavour.instances("default") == {"VDU1": 1, "VDU2": 1}
    assert flavour.instances("big") == {"VDU1": 2, "VDU2": 2}
    assert flavour.instances(None, {"worker": 0}) == {"VDU1": 1, "VDU2": 1}
    assert flavour.instances(None, {"worker": 2}) == {"VDU1": 1, "VDU2": 3}
    assert flavour.instances("default", {"worker": 3}) == {"VDU1": 1, "VDU2": 4}
    # big is at scale level 1 already: its own counts are the starting point
    assert flavour.instances("big", {"worker": 1}) == {"VDU1": 2, "VDU2": 2}
    assert flavour.instances("big", {"worker": 3}) == {"VDU1": 2, "VDU2": 4}
    assert flavour.instances("big", {"worker": 0}) == {"VDU1": 2, "VDU2": 1}
    assert flavour.instances("big", {}) == flavour.instances("big")


def test_instances_stay_within_the_vdu_profile() -> None:
    def narrow(d: dict) -> None:
        nodes(d)["VDU2"]["properties"]["vdu_profile"] = {"min_number_of_instances": 2,
                                                          "max_number_of_instances": 3}

    flavour = read_vnfd_yaml(vnfd_with(narrow)).flavours["simple"]
    assert flavour.instances() == {"VDU1": 1, "VDU2": 2}
    assert flavour.instances(None, {"worker": 3}) == {"VDU1": 1, "VDU2": 3}
    assert flavour.instances("big", {"worker": 0}) == {"VDU1": 2, "VDU2": 2}


@pytest.mark.parametrize("level, scale, message", [
    ("huge", None, "no instantiation level 'huge'"),
    (None, {"nope": 1}, "no scaling aspect 'nope'"),
    (None, {"worker": 4}, "scale level 4 of aspect worker is outside 0..3"),
    (None, {"worker": -1}, "scale level -1 of aspect worker is outside 0..3"),
    ("big", {"worker": "2"}, "scale level '2' of aspect worker is outside 0..3"),
])
def test_instances_refuse_unknown_levels_and_aspects(level: str | None, scale: dict | None,
                                                     message: str) -> None:
    assert message in error(expected_sample().flavours["simple"].instances, level, scale)


def test_without_instantiation_levels_the_initial_deltas_are_the_default_level() -> None:
    def no_levels(d: dict) -> None:
        d["topology_template"]["policies"] = [
            p for p in d["topology_template"]["policies"]
            if next(iter(p.values()))["type"] not in ("tosca.policies.nfv.InstantiationLevels",
                                                      "tosca.policies.nfv.VduInstantiationLevels")]
        policy(d, "initial_delta")["targets"] = ["VDU2"]
        policy(d, "initial_delta")["properties"]["initial_delta"]["number_of_instances"] = 2

    flavour = read_vnfd_yaml(vnfd_with(no_levels)).flavours["simple"]
    assert flavour.default_level == "default" and list(flavour.levels) == ["default"]
    assert flavour.levels["default"].scale_info == {"worker": 0}
    assert flavour.instances() == {"VDU1": 1, "VDU2": 2}  # VDU1: its vdu_profile's minimum
    assert flavour.instances(None, {"worker": 2}) == {"VDU1": 1, "VDU2": 4}


def test_several_levels_without_a_default() -> None:
    def no_default(d: dict) -> None:
        del policy(d, "instantiation_levels")["properties"]["default_level"]

    flavour = read_vnfd_yaml(vnfd_with(no_default)).flavours["simple"]
    assert flavour.default_level is None
    assert "no default instantiation level" in error(flavour.instances)
    assert flavour.instances("big") == {"VDU1": 2, "VDU2": 2}


# --- the stored form ----------------------------------------------------------------------------


def test_to_dict_is_json_and_from_dict_rebuilds_an_equal_vnfd() -> None:
    vnfd = read_package(sample_csar(3, flavours=("simple", "large")))[0]
    d = vnfd.to_dict()
    stored = json.loads(json.dumps(d))
    assert stored == d  # JSON-ready as it is: no tuples, no objects
    again = Vnfd.from_dict(stored)
    assert again == vnfd
    assert isinstance(again.vnfm_info, tuple) and isinstance(again.flavours["simple"].vdus["VDU1"].cps, tuple)
    assert again.flavours["large"].instances("big", {"worker": 3}) == {"VDU1": 2, "VDU2": 4, "VDU3": 2}
    no_image = copy.deepcopy(stored)
    no_image["flavours"]["simple"]["vdus"]["VDU1"]["image"] = None
    assert Vnfd.from_dict(no_image).flavours["simple"].vdus["VDU1"].image is None
    assert "stored VNFD is not valid" in error(Vnfd.from_dict, {"id": "x"})


# --- bad packages -------------------------------------------------------------------------------


def single(change: Callable[[dict[str, bytes | str]], object]) -> bytes:
    files = sample_csar_files(layout="single")
    change(files)
    return make_zip(files)


def zip_with_lying_size() -> bytes:
    """A zip whose headers say its file is 10 bytes; it unpacks to a megabyte."""
    data = bytearray(make_zip({"a.yaml": b"\0" * 2**20}))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig) + offset
        data[at:at + 4] = struct.pack("<I", 10)
    return bytes(data)


BAD_PACKAGES: list[tuple[str, Callable[[], bytes], str]] = [
    ("not a zip", lambda: b"PK this is not a zip", "not a zip file"),
    ("empty", lambda: b"", "not a zip file"),
    ("zip bomb", lambda: make_zip({"TOSCA-Metadata/TOSCA.meta": tosca_meta("a.yaml"), "a.yaml": "a: 1\n",
                                   "big.img": b"\0" * (2 * 2**20)}),
     "unpacks to more than the 1048576 bytes"),
    ("lying sizes", zip_with_lying_size, "a.yaml: cannot be unpacked"),
    ("traversal in a name", lambda: single(lambda f: f.update({"../evil.yaml": "x"})),
     "unsafe path '../evil.yaml'"),
    ("absolute name", lambda: single(lambda f: f.update({"/etc/x.yaml": "x"})), "unsafe path '/etc/x.yaml'"),
    ("backslashes", lambda: single(lambda f: f.update({"a\\..\\..\\x": "x"})), "unsafe path"),
    ("no Entry-Definitions", lambda: single(lambda f: f.update({
        "TOSCA-Metadata/TOSCA.meta": "TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\n"})),
     "TOSCA-Metadata/TOSCA.meta: no Entry-Definitions"),
    ("Entry-Definitions missing", lambda: single(lambda f: f.update({
        "TOSCA-Metadata/TOSCA.meta": tosca_meta("Definitions/none.yaml")})),
     "Entry-Definitions Definitions/none.yaml is not in the package"),
    ("Entry-Definitions outside", lambda: single(lambda f: f.update({
        "TOSCA-Metadata/TOSCA.meta": tosca_meta("../x.yaml")})), "unsafe path '../x.yaml'"),
    ("no meta, two root templates", lambda: make_zip({"a.yaml": "a: 1\n", "b.yml": "b: 1\n"}),
     "2 .yaml files at the package's root"),
    ("no meta, no template", lambda: make_zip({"Files/x.img": b"x"}), "0 .yaml files at the package's root"),
    ("not UTF-8", lambda: single(lambda f: f.update({ENTRY: b"\xff\xfe\x00bad"})),
     f"{ENTRY}: not UTF-8 text"),
    ("YAML not a mapping", lambda: single(lambda f: f.update({ENTRY: "- a\n- b\n"})),
     f"{ENTRY}: not a YAML mapping"),
    ("YAML syntax", lambda: single(lambda f: f.update({ENTRY: "a: [1, 2\nb: }\n"})),
     f"{ENTRY}: not valid YAML"),
    ("python tag", lambda: single(lambda f: f.update({ENTRY: "a: !!python/object/apply:os.system ['x']\n"})),
     "could not determine a constructor for the tag"),
    ("image missing", lambda: single(lambda f: f.pop(image_file(2))),
     f"{image_file(2)}: the image of VDU VDU2 (flavour simple) is not in the package"),
]


@pytest.mark.parametrize("build, message", [(b, m) for _, b, m in BAD_PACKAGES],
                         ids=[name for name, _, _ in BAD_PACKAGES])
def test_bad_packages_are_refused_with_a_clear_message(build: Callable[[], bytes], message: str) -> None:
    assert message in error(read_package, build(), max_size=2**20)


def test_a_package_too_large_to_take() -> None:
    data = sample_csar()
    assert f"the package is {len(data)} bytes, more than the 1000 allowed" in error(read_package, data, 1000)
    assert "a VNF package is bytes" in error(read_package, "PK")  # type: ignore[arg-type]


def test_a_split_package_missing_an_imported_file() -> None:
    files = sample_csar_files(layout="split")
    del files["Definitions/sample_types.yaml"]
    assert ("Definitions/sample_top.vnfd.yaml, import sample_types.yaml: Definitions/sample_types.yaml is not"
            " in the package") in error(read_package, make_zip(files))


def drop(key: str) -> Callable[[dict], object]:
    return lambda d: nodes(d).pop(key)


def setp(node: str, path: str, value: Any) -> Callable[[dict], object]:
    """Set nodes[node][a][b]... = value, path 'a.b...'."""
    def change(d: dict) -> None:
        at = nodes(d)[node]
        *parents, last = path.split(".")
        for p in parents:
            at = at[p]
        at[last] = value
    return change


COMPUTE = "capabilities.virtual_compute.properties"
BAD_VNFDS: list[tuple[str, Callable[[dict], object], str]] = [
    ("no VNF node", drop("VNF"), "<vnfd>: no node of type tosca.nodes.nfv.VNF"),
    ("no VDU", lambda d: [nodes(d).pop(k) for k in list(nodes(d)) if k.startswith("VDU")] and
     d["topology_template"].pop("policies"), "deployment flavour simple has no VDU"),
    ("VduCp bound to an unknown VDU", setp("VDU1_CP1", "requirements", [{"virtual_binding": "VDU9"}]),
     "<vnfd>, node VDU1_CP1: bound (virtual_binding) to VDU9, which is not a VDU of this flavour"),
    ("VduCp with no binding", setp("VDU1_CP1", "requirements", []),
     "<vnfd>, node VDU1_CP1: a VduCp without virtual_binding"),
    ("VduCp on an unknown link", setp("VDU1_CP2", "requirements", [{"virtual_binding": "VDU1"},
                                                                   {"virtual_link": {"node": "vl9"}}]),
     "node VDU1_CP2: virtual_link to vl9, which is not a tosca.nodes.nfv.VnfVirtualLink"),
    ("memory in potatoes", setp("VDU1", f"{COMPUTE}.virtual_memory.virtual_mem_size", "12 potatoes"),
     "<vnfd>, node VDU1: virtual_mem_size '12 potatoes' is not a size such as '512 MiB' or '1 GB'"),
    ("memory without a unit", setp("VDU1", f"{COMPUTE}.virtual_memory.virtual_mem_size", 512),
     "virtual_mem_size 512 is not a size"),
    ("no memory", setp("VDU1", f"{COMPUTE}.virtual_memory", None), "node VDU1: virtual_memory is missing"),
    ("zero vcpus", setp("VDU1", f"{COMPUTE}.virtual_cpu.num_virtual_cpu", 0),
     "node VDU1: num_virtual_cpu 0 is outside 1.."),
    ("vcpus as text", setp("VDU1", f"{COMPUTE}.virtual_cpu.num_virtual_cpu", "two"),
     "node VDU1: num_virtual_cpu is not an integer ('two')"),
    ("no vdu_profile", setp("VDU1", "properties.vdu_profile", None), "node VDU1: vdu_profile is missing"),
    ("max below min", setp("VDU1", "properties.vdu_profile", {"min_number_of_instances": 3,
                                                              "max_number_of_instances": 2}),
     "node VDU1: max_number_of_instances 2 is outside 3.."),
    ("image without a name", setp("VDU1", "properties.sw_image_data.name", None),
     "node VDU1: sw_image_data name is missing"),
    ("image outside the package", setp("VDU1", "artifacts.sw_image.file", "../../etc/passwd"),
     "node VDU1, artifact sw_image: path '../../etc/passwd' leaves the package"),
    ("unknown node type", setp("VDU1", "type", "company.Nothing"),
     "node VDU1: type company.Nothing is defined nowhere in the package"),
    ("aspect delta on an unknown VDU", lambda d: policy(d, "worker_deltas").update(targets=["VDU9"]),
     "<vnfd>, policy worker_deltas: target VDU9 is not a VDU of this flavour"),
    ("delta of an unknown aspect", lambda d: policy(d, "worker_deltas")["properties"].update(aspect="nope"),
     "policy worker_deltas: aspect nope is not defined (ScalingAspects)"),
    ("delta not a step", lambda d: policy(d, "worker_deltas")["properties"].update(
        deltas={"delta_9": {"number_of_instances": 1}}),
     "delta delta_9 is not one of aspect worker's step_deltas"),
    ("level past max_scale_level", lambda d: policy(d, "instantiation_levels")["properties"]["levels"]["big"]
     ["scale_info"][SAMPLE_ASPECT].update(scale_level=4), "level big puts aspect worker at 4, past its"
                                                          " max_scale_level 3"),
    ("VDU level unknown", lambda d: policy(d, "VDU1_instantiation_levels")["properties"]["levels"].update(
        huge={"number_of_instances": 9}), "level huge is not an instantiation level"),
    ("default level unknown", lambda d: policy(d, "instantiation_levels")["properties"].update(
        default_level="huge"), "default_level huge is not one of the levels"),
    ("import by URL", lambda d: d["imports"].append("https://example.com/types.yaml"),
     "<vnfd>: imports https://example.com/types.yaml by URL"),
    ("import missing", lambda d: d["imports"].append("types.yaml"),
     "<vnfd>, import types.yaml: types.yaml is not in the package"),
    ("import leaving the package", lambda d: d["imports"].append("../types.yaml"),
     "<vnfd>, import ../types.yaml: path '../types.yaml' leaves the package"),
    ("no descriptor_id", lambda d: d["node_types"]["esc.sample.VNF"]["properties"].pop("descriptor_id"),
     "<vnfd>, node VNF: descriptor_id is missing"),
    ("node names not strings", lambda d: nodes(d).update({7: {"type": "tosca.nodes.nfv.VduCp"}}),
     "node_templates has a key 7 that is not a string"),
    ("policies not a list", lambda d: d["topology_template"].update(policies="all"),
     "policies is not a list"),
]


@pytest.mark.parametrize("change, message", [(c, m) for _, c, m in BAD_VNFDS],
                         ids=[name for name, _, _ in BAD_VNFDS])
def test_bad_vnfds_are_refused_with_a_clear_message(change: Callable[[dict], object], message: str) -> None:
    assert message in error(read_vnfd_yaml, vnfd_with(change))


def test_bad_vnfd_in_a_package_names_its_file() -> None:
    files = sample_csar_files(layout="split")
    df = "Definitions/sample_df_simple.yaml"
    doc = yaml.safe_load(files[df])
    nodes(doc)["VDU2_CP1"]["requirements"] = [{"virtual_binding": "VDU7"}]
    files[df] = yaml.safe_dump(doc)
    assert f"{df}, node VDU2_CP1: bound (virtual_binding) to VDU7" in error(read_package, make_zip(files))


def test_yaml_that_is_not_a_mapping_or_not_text() -> None:
    for text in ("", "just words", "[1, 2]", "42"):
        assert "<vnfd>: not a YAML mapping" in error(read_vnfd_yaml, text)
    assert "a VNFD is YAML text" in error(read_vnfd_yaml, b"a: 1")  # type: ignore[arg-type]
    assert "not valid YAML" in error(read_vnfd_yaml, "a: 2001-02-30\n")  # a timestamp with no such day


def laughs(levels: int = 40) -> list:
    """A value that YAML writes with aliases in a few lines, and that is 2**40 strings unfolded."""
    v: list = ["lol", "lol"]
    for _ in range(levels):
        v = [v, v]
    return v


@pytest.mark.timeout(20)
@pytest.mark.parametrize("change, message", [
    (setp("VNF", "properties.descriptor_id", laughs()), "node VNF: descriptor_id is not a string ([[[[...],"),
    (setp("VNF", "properties.vnfm_info", [laughs()]), "node VNF: vnfm_info entry is not a string"),
    (setp("VDU1", "properties.name", laughs()), "node VDU1: name is not a string"),
    (setp("VDU1", "properties.vdu_profile.max_number_of_instances", laughs()),
     "max_number_of_instances is not an integer"),
    (lambda d: policy(d, "initial_delta").update(targets=laughs()),
     "policy initial_delta: a target is not a string"),
    (lambda d: d["imports"].append(laughs()), "<vnfd>: import [[[[...], [...]], [[...], [...]]],"),
    (lambda d: policy(d, "instantiation_levels")["properties"].update(default_level=laughs()),
     "default_level is not a string"),
])
def test_yaml_aliases_cannot_blow_up(change: Callable[[dict], object], message: str) -> None:
    got = error(read_vnfd_yaml, vnfd_with(change))
    assert message in got and len(got) < 200


@pytest.mark.timeout(20)
def test_a_type_defined_twice() -> None:
    files = sample_vnfd_files(folder="")
    top = yaml.safe_load(files.pop("sample_top.vnfd.yaml"))
    types = yaml.safe_load(files["sample_types.yaml"])
    top["node_types"] = copy.deepcopy(types["node_types"])
    assert read_vnfd_yaml(yaml.safe_dump(top), files).id == SAMPLE_VNFD_ID  # the same twice: fine
    top["node_types"]["esc.sample.VNF"]["properties"]["provider"]["default"] = "Other"
    twice = "sample_types.yaml: type esc.sample.VNF is also defined differently in <vnfd>"
    assert twice in error(read_vnfd_yaml, yaml.safe_dump(top), files)
    for doc in (top, types):
        doc["node_types"]["esc.sample.VNF"]["metadata"] = laughs()
    files["sample_types.yaml"] = yaml.safe_dump(types)
    assert twice in error(read_vnfd_yaml, yaml.safe_dump(top), files)


# --- garbage never raises anything but PackageError ---------------------------------------------


def accepts_or_refuses(fn: Callable[..., Any], *args: Any) -> None:
    try:
        result = fn(*args)
    except PackageError as e:
        assert "\n" not in str(e)
        return
    vnfd = result[0] if isinstance(result, tuple) else result
    assert Vnfd.from_dict(json.loads(json.dumps(vnfd.to_dict()))) == vnfd
    for flavour in vnfd.flavours.values():
        for level in [None, *flavour.levels]:
            try:
                flavour.instances(level, {a: s.max_scale_level for a, s in flavour.aspects.items()})
            except PackageError:
                pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    accepts_or_refuses(read_package, data)
    accepts_or_refuses(read_package, b"PK\x03\x04" + data)


SAMPLE_CSAR = sample_csar()


def test_a_file_with_no_name() -> None:
    # Found by the test below: ZipInfo.is_dir() raises IndexError on an empty name.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(""), b"x")
    assert "no name" in error(read_package, buf.getvalue())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE_CSAR) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_damaged_sample_package(flips: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE_CSAR)
    for at, byte in flips:
        data[at] = byte
    accepts_or_refuses(read_package, bytes(data))


NAMES = st.sampled_from(["TOSCA-Metadata/TOSCA.meta", ENTRY, "a.yaml", "Files/images/cirros.qcow2", "../x",
                         "/abs", "dir/", "x.yml"]) | st.text(min_size=1, max_size=12)
BODIES = (st.binary(max_size=60) | st.text(max_size=60) | st.sampled_from(
    [sample_vnfd_yaml(), tosca_meta(ENTRY), "Entry-Definitions: a.yaml\n", "a: [", "- 1"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(NAMES, BODIES), max_size=5))
def test_random_zips(entries: list[tuple[str, bytes | str]]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names: wanted here
        for name, body in entries:
            try:
                zf.writestr(name, body)
            except (ValueError, IndexError):  # zipfile's own refusals (a name cut empty at a NUL)
                pass
    accepts_or_refuses(read_package, buf.getvalue())


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200)
       | st.sampled_from(["a: &x [*x]", "{a: !!binary 'zz'}", "? [a]\n: 1\n", "a: .inf", "a: !!set {b}"]))
def test_random_yaml(text: str) -> None:
    accepts_or_refuses(read_vnfd_yaml, text)


def _paths(v: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*at, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*at, i))
    return out


# the single template, and the split layout's files (at the root: read_vnfd_yaml's view)
SOURCES = {name: yaml.safe_load(text)
           for name, text in {"single": sample_vnfd_yaml(), **sample_vnfd_files(folder="")}.items()}
PATHS = [(name, path) for name, doc in SOURCES.items() for path in _paths(doc)[1:]]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's when there: 6 times faster
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["VDU1", "VDU2", "internalVL1", "worker", "delta_1", "big", "1 GiB", "-1 MiB",
                       "tosca.nodes.nfv.VduCp", "tosca.nodes.nfv.Vdu.Compute"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), JUNK, st.booleans()), min_size=1, max_size=3))
def test_a_mangled_sample_is_read_or_refused(changes: list[tuple[tuple[str, tuple], Any, bool]]) -> None:
    docs = copy.deepcopy(SOURCES)
    for (name, path), junk, delete in changes:
        at = docs[name]
        try:
            for key in path[:-1]:
                at = at[key]
            if delete and isinstance(at, dict):
                at.pop(path[-1], None)
            else:
                at[path[-1]] = junk
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change took this path away
    texts = {name: yaml.dump(doc, Dumper=DUMPER) for name, doc in docs.items()}
    accepts_or_refuses(read_vnfd_yaml, texts.pop("single"))
    accepts_or_refuses(read_vnfd_yaml, texts.pop("sample_top.vnfd.yaml"), texts)
