"""Sample ETSI SOL001 VNF packages (SOL004 CSARs) built in memory: what the tests, the
benchmark and ``escadm etsi package sample`` (an example to start from) onboard.

The sample: VDU1 ("cirros") and VDU2 ("web"), more VDUs named vduN; each VDU has an external CP
(``VDUn_CP1``, no virtual link) and an internal one (``VDUn_CP2``) on ``internalVL1``; aspect
``worker`` (max scale level 3) adds one VDU2 per step; instantiation levels ``default`` (one of each,
scale level 0) and ``big`` (two of each, scale level 1). The ETSI type files are imported by URL,
as the ETSI forge publishes them: nothing here copies them.
"""

from __future__ import annotations

import io
import zipfile

import yaml

SAMPLE_VNFD_ID = "6f0c4b8e-3d55-4a3e-9a51-2f3c1e7d9b10"
SAMPLE_FLAVOUR = "simple"
SAMPLE_ASPECT = "worker"
SOL001_BASE = "https://forge.etsi.org/rep/nfv/SOL001/raw/v2.6.1/"
ETSI_IMPORTS = [SOL001_BASE + "etsi_nfv_sol001_common_types.yaml",
                SOL001_BASE + "etsi_nfv_sol001_vnfd_types.yaml"]
VNF_TYPE = "esc.sample.VNF"

# VDU n: (image name, image version, vcpus, memory, disk); past the table: vduN like VDU2
_VDU_TABLE = {1: ("cirros", "0.6.2", 1, "512 MiB", "1 GiB"), 2: ("web", "1.0", 1, "1 GiB", "2 GiB")}
MAX_SCALE_LEVEL = 3


def _vdu_spec(n: int) -> tuple[str, str, int, str, str]:
    return _VDU_TABLE.get(n) or (f"vdu{n}", "1.0", 1, "1 GiB", "2 GiB")


def scaled_vdu(vdus: int = 2) -> str:
    """The VDU the sample's aspect scales: VDU2, or VDU1 when there is only one."""
    return f"VDU{min(2, vdus)}"


def image_file(n: int) -> str:
    """The sample image of VDU n, by its path in the CSAR."""
    return f"Files/images/{_vdu_spec(n)[0]}.qcow2"


def image_bytes(n: int) -> bytes:
    return f"not really a qcow2 image: {_vdu_spec(n)[0]}\n".encode() * 8


def _vnf_type(descriptor_id: str, flavour_ids: list[str], vdus: int) -> dict:
    def prop(value: object, typ: str = "string") -> dict:
        return {"type": typ, "constraints": [{"valid_values": [value]}], "default": value}

    return {
        VNF_TYPE: {
            "derived_from": "tosca.nodes.nfv.VNF",
            "properties": {
                "descriptor_id": prop(descriptor_id),
                "descriptor_version": prop("1.0"),
                "provider": prop("ESC"),
                "product_name": prop("Sample VNF"),
                "software_version": prop("1.0"),
                "vnfm_info": {"type": "list", "entry_schema": {"type": "string"}, "default": ["ESC"]},
                "flavour_id": {"type": "string", "constraints": [{"valid_values": flavour_ids}]},
                "flavour_description": {"type": "string", "default": ""},
            },
            "requirements": [
                {f"ext_cp_vdu{n}": {"capability": "tosca.capabilities.nfv.VirtualLinkable"}}
                for n in range(1, vdus + 1)
            ],
        }
    }


def _flavour_topology(vdus: int, flavour_id: str, image_dir: str, max_scale_level: int) -> dict:
    nodes: dict[str, dict] = {
        "VNF": {
            "type": VNF_TYPE,
            "properties": {"flavour_id": flavour_id, "flavour_description": f"The {flavour_id} flavour"},
        }
    }
    for n in range(1, vdus + 1):
        name, version, vcpus, memory, disk = _vdu_spec(n)
        nodes[f"VDU{n}"] = {
            "type": "tosca.nodes.nfv.Vdu.Compute",
            "properties": {
                "name": name,
                "description": f"VDU {n}: {name}",
                "vdu_profile": {"min_number_of_instances": 1, "max_number_of_instances": 2 + max_scale_level},
                "sw_image_data": {
                    "name": name,
                    "version": version,
                    "checksum": {"algorithm": "sha-256", "hash": "0" * 64},
                    "container_format": "bare",
                    "disk_format": "qcow2",
                    "min_disk": "1 GiB",
                    "min_ram": "256 MiB",
                    "size": "1 GiB",
                },
            },
            "capabilities": {
                "virtual_compute": {
                    "properties": {
                        "virtual_memory": {"virtual_mem_size": memory},
                        "virtual_cpu": {"num_virtual_cpu": vcpus},
                        "virtual_local_storage": [{"size_of_storage": disk}],
                    }
                }
            },
            "artifacts": {
                "sw_image": {"type": "tosca.artifacts.nfv.SwImage", "file": f"{image_dir}/{name}.qcow2"}
            },
        }
    for n in range(1, vdus + 1):
        nodes[f"VDU{n}_CP1"] = {
            "type": "tosca.nodes.nfv.VduCp",
            "properties": {"layer_protocols": ["ipv4"], "order": 0},
            "requirements": [{"virtual_binding": f"VDU{n}"}],
        }
        nodes[f"VDU{n}_CP2"] = {
            "type": "tosca.nodes.nfv.VduCp",
            "properties": {"layer_protocols": ["ipv4"], "order": 1},
            "requirements": [{"virtual_binding": f"VDU{n}"}, {"virtual_link": "internalVL1"}],
        }
    nodes["internalVL1"] = {
        "type": "tosca.nodes.nfv.VnfVirtualLink",
        "properties": {
            "connectivity_type": {"layer_protocols": ["ipv4"]},
            "description": "Internal network",
            "vl_profile": {
                "max_bitrate_requirements": {"root": 1048576, "leaf": 1048576},
                "min_bitrate_requirements": {"root": 1048576, "leaf": 1048576},
                "virtual_link_protocol_data": [
                    {
                        "associated_layer_protocol": "ipv4",
                        "l3_protocol_data": {"ip_version": "ipv4", "cidr": "192.0.2.0/24"},
                    }
                ],
            },
        },
    }
    all_vdus = [f"VDU{n}" for n in range(1, vdus + 1)]
    scaled = scaled_vdu(vdus)
    policies = [
        {
            "scaling_aspects": {
                "type": "tosca.policies.nfv.ScalingAspects",
                "properties": {
                    "aspects": {
                        SAMPLE_ASPECT: {
                            "name": "worker aspect",
                            "description": f"adds one {scaled} per step",
                            "max_scale_level": max_scale_level,
                            "step_deltas": ["delta_1"],
                        }
                    }
                },
            }
        },
        {
            "initial_delta": {
                "type": "tosca.policies.nfv.VduInitialDelta",
                "properties": {"initial_delta": {"number_of_instances": 1}},
                "targets": all_vdus,
            }
        },
        {
            "worker_deltas": {
                "type": "tosca.policies.nfv.VduScalingAspectDeltas",
                "properties": {"aspect": SAMPLE_ASPECT, "deltas": {"delta_1": {"number_of_instances": 1}}},
                "targets": [scaled],
            }
        },
        {
            "instantiation_levels": {
                "type": "tosca.policies.nfv.InstantiationLevels",
                "properties": {
                    "levels": {
                        "default": {"description": "one of each",
                                    "scale_info": {SAMPLE_ASPECT: {"scale_level": 0}}},
                        "big": {"description": "two of each",
                                "scale_info": {SAMPLE_ASPECT: {"scale_level": 1}}},
                    },
                    "default_level": "default",
                },
            }
        },
    ]
    for vdu in all_vdus:
        policies.append(
            {
                f"{vdu}_instantiation_levels": {
                    "type": "tosca.policies.nfv.VduInstantiationLevels",
                    "properties": {"levels": {"default": {"number_of_instances": 1},
                                              "big": {"number_of_instances": 2}}},
                    "targets": [vdu],
                }
            }
        )
    # tosca-parser wants the VNF type's properties declared as inputs of a substituting template
    inputs = {
        p: {"type": "string"}
        for p in ("descriptor_id", "descriptor_version", "provider", "product_name", "software_version",
                  "flavour_id", "flavour_description")
    }
    inputs["vnfm_info"] = {"type": "list", "entry_schema": {"type": "string"}}
    return {
        "inputs": inputs,
        "substitution_mappings": {
            "node_type": VNF_TYPE,
            "properties": {"flavour_id": flavour_id},
            "requirements": {f"ext_cp_vdu{n}": [f"VDU{n}_CP1", "virtual_link"] for n in range(1, vdus + 1)},
        },
        "node_templates": nodes,
        "policies": policies,
    }


def _dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def sample_vnfd_yaml(
    vdus: int = 2,
    *,
    descriptor_id: str = SAMPLE_VNFD_ID,
    flavour_id: str = SAMPLE_FLAVOUR,
    max_scale_level: int = MAX_SCALE_LEVEL,
    image_dir: str = "Files/images",
) -> str:
    """The whole VNFD in one service template (one flavour). ``image_dir``: the images' folder,
    relative to the template's own (the default fits a template at the package's root)."""
    return _dump(
        {
            "tosca_definitions_version": "tosca_simple_yaml_1_2",
            "description": f"Sample VNF with {vdus} VDUs",
            "imports": list(ETSI_IMPORTS),
            "node_types": _vnf_type(descriptor_id, [flavour_id], vdus),
            "topology_template": _flavour_topology(vdus, flavour_id, image_dir, max_scale_level),
        }
    )


def sample_vnfd_files(
    vdus: int = 2,
    *,
    descriptor_id: str = SAMPLE_VNFD_ID,
    flavours: tuple[str, ...] = (SAMPLE_FLAVOUR,),
    max_scale_level: int = MAX_SCALE_LEVEL,
    folder: str = "Definitions",
) -> dict[str, str]:
    """The split layout of real packages, by path in the CSAR: ``Definitions/sample_top.vnfd.yaml``
    (first; the VNF's identity, importing the others), ``sample_types.yaml`` (the VNF node type) and
    one ``sample_df_<flavour>.yaml`` per deployment flavour. ``folder=""``: all at the root."""
    at = f"{folder}/" if folder else ""
    image_dir = "../Files/images" if folder else "Files/images"
    head = {"tosca_definitions_version": "tosca_simple_yaml_1_2"}
    top = {
        **head,
        "description": f"Sample VNF with {vdus} VDUs",
        "imports": [*ETSI_IMPORTS, "sample_types.yaml", *(f"sample_df_{f}.yaml" for f in flavours)],
        "topology_template": {
            "inputs": {"selected_flavour": {"type": "string", "description": "the flavour asked for"}},
            "node_templates": {
                "VNF": {
                    "type": VNF_TYPE,
                    "properties": {
                        "flavour_id": {"get_input": "selected_flavour"},
                        "descriptor_id": descriptor_id,
                        "descriptor_version": "1.0",
                        "provider": "ESC",
                        "product_name": "Sample VNF",
                        "software_version": "1.0",
                        "vnfm_info": ["ESC"],
                    },
                }
            },
        },
    }
    files = {
        f"{at}sample_top.vnfd.yaml": _dump(top),
        f"{at}sample_types.yaml": _dump(
            {**head, "imports": list(ETSI_IMPORTS),
             "node_types": _vnf_type(descriptor_id, list(flavours), vdus)}
        ),
    }
    for flavour in flavours:
        files[f"{at}sample_df_{flavour}.yaml"] = _dump(
            {
                **head,
                "description": f"The {flavour} deployment flavour",
                "imports": [*ETSI_IMPORTS, "sample_types.yaml"],
                "topology_template": _flavour_topology(vdus, flavour, image_dir, max_scale_level),
            }
        )
    return files


def tosca_meta(entry: str) -> str:
    return (
        "TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\nCreated-By: ESC tests\n"
        f"Entry-Definitions: {entry}\n"
    )


def make_zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, body in files.items():
            zf.writestr(path, body)
    return buf.getvalue()


def sample_csar_files(
    vdus: int = 2,
    *,
    layout: str = "split",
    descriptor_id: str = SAMPLE_VNFD_ID,
    flavours: tuple[str, ...] = (SAMPLE_FLAVOUR,),
    max_scale_level: int = MAX_SCALE_LEVEL,
    images: bool = True,
) -> dict[str, bytes | str]:
    """The files of ``sample_csar`` by path, to change one before zipping with ``make_zip``."""
    files: dict[str, bytes | str]
    if layout == "split":
        defs = sample_vnfd_files(vdus, descriptor_id=descriptor_id, flavours=flavours,
                                 max_scale_level=max_scale_level)
        files = {"TOSCA-Metadata/TOSCA.meta": tosca_meta(next(iter(defs))), **defs}
    elif layout in ("single", "root"):
        if len(flavours) != 1:
            raise ValueError("one flavour per template: use layout='split' for more")
        root = layout == "root"
        entry = "sample.vnfd.yaml" if root else "Definitions/sample.vnfd.yaml"
        text = sample_vnfd_yaml(vdus, descriptor_id=descriptor_id, flavour_id=flavours[0],
                                max_scale_level=max_scale_level,
                                image_dir="Files/images" if root else "../Files/images")
        files = {entry: text} if root else {"TOSCA-Metadata/TOSCA.meta": tosca_meta(entry), entry: text}
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if images:
        for n in range(1, vdus + 1):
            files[image_file(n)] = image_bytes(n)
    return files


def sample_csar(
    vdus: int = 2,
    *,
    layout: str = "split",
    descriptor_id: str = SAMPLE_VNFD_ID,
    flavours: tuple[str, ...] = (SAMPLE_FLAVOUR,),
    max_scale_level: int = MAX_SCALE_LEVEL,
    images: bool = True,
) -> bytes:
    """A valid SOL004 CSAR of the sample VNF. ``layout``: ``split`` (TOSCA.meta naming a top-level
    template that imports a types file and one file per flavour), ``single`` (TOSCA.meta naming one
    template) or ``root`` (no TOSCA-Metadata: the root's only .yaml file)."""
    return make_zip(sample_csar_files(vdus, layout=layout, descriptor_id=descriptor_id, flavours=flavours,
                                      max_scale_level=max_scale_level, images=images))
