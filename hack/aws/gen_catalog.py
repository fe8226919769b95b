#!/usr/bin/env python3
"""Generates crates/aws/data/catalog-<region>.json, the AWS provider's embedded catalog.

Run it through hack/aws/gen-catalog (which prepares the venv and the Go module); this file only
reads inputs that a registry package ships, never anything typed by hand:

  * instance-type facts (vCPUs, memory, architecture, ENI limits, GPUs, ...) and the zones each
    type is offered in: PyPI `moto`, files moto/ec2/resources/instance_types.json.gz and
    moto/ec2/resources/instance_type_offerings/availability-zone/<region>.json.gz, which moto
    ships as recorded DescribeInstanceTypes / DescribeInstanceTypeOfferings answers;
  * on-demand prices: the Go module github.com/aws/karpenter-provider-aws, file
    pkg/providers/pricing/zz_generated.pricing_aws.go (upstream's own static fallback table,
    generated there from the AWS Pricing API).

The output keeps raw EC2 facts only. Allocatable, labels and spot prices are computed in Rust
(crates/aws/src/instance_type.rs) so the static catalog and the live SDK provider share one
implementation.

Usage: gen_catalog.py --moto-dir DIR --pricing-zip ZIP --module-version V --region R --out FILE
"""

import argparse
import gzip
import importlib.metadata
import json
import re
import sys
import zipfile

# Architectures Kubernetes nodes run on; the rest (i386, *_mac) are not node material.
KUBE_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


def load_gz_json(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def parse_prices(go_source, region):
    """Returns {instance type: USD/hour} from the `"<region>": { ... }` block of the Go map."""
    start = go_source.find(f'"{region}": {{')
    if start < 0:
        sys.exit(f"gen_catalog: no price block for {region} in the pricing table")
    end = go_source.find("\n\t},", start)
    if end < 0:
        sys.exit(f"gen_catalog: unterminated price block for {region}")
    block = go_source[start:end]
    prices = {name: float(p) for name, p in re.findall(r'"([a-z0-9-]+\.[a-z0-9-]+)":\s*([0-9.]+)', block)}
    if len(prices) < 100:
        sys.exit(f"gen_catalog: only {len(prices)} prices parsed for {region}; has the format changed?")
    return prices


def raw_facts(info):
    """The EC2 facts the Rust side needs, named like the DescribeInstanceTypes fields."""
    net = info["NetworkInfo"]
    card_index = net.get("DefaultNetworkCardIndex", 0)
    cards = [c for c in net.get("NetworkCards", []) if c.get("NetworkCardIndex") == card_index]
    # The VPC CNI only uses the default network card, so its ENI count is what limits pods.
    enis = cards[0]["MaximumNetworkInterfaces"] if cards else net["MaximumNetworkInterfaces"]
    arches = [KUBE_ARCH[a] for a in info["ProcessorInfo"]["SupportedArchitectures"] if a in KUBE_ARCH]
    out = {
        "name": info["InstanceType"],
        "vcpu": info["VCpuInfo"]["DefaultVCpus"],
        "memoryMiB": info["MemoryInfo"]["SizeInMiB"],
        "arch": arches[0],
        "enis": enis,
        "ipv4PerEni": net["Ipv4AddressesPerInterface"],
        "usage": sorted(u for u in info.get("SupportedUsageClasses", []) if u in ("on-demand", "spot")),
    }
    if info.get("Hypervisor"):
        out["hypervisor"] = info["Hypervisor"]
    if info.get("BareMetal"):
        out["bareMetal"] = True
    proc = info["ProcessorInfo"]
    if proc.get("Manufacturer"):
        out["cpuManufacturer"] = proc["Manufacturer"]
    if proc.get("SustainedClockSpeedInGhz"):
        out["clockMhz"] = round(proc["SustainedClockSpeedInGhz"] * 1000)
    storage = info.get("InstanceStorageInfo")
    if storage and storage.get("NvmeSupport") != "unsupported" and storage.get("TotalSizeInGB"):
        out["localNvmeGB"] = storage["TotalSizeInGB"]
    ebs = info.get("EbsInfo", {})
    if ebs.get("EbsOptimizedSupport") == "default" and ebs.get("EbsOptimizedInfo"):
        out["ebsBandwidthMbps"] = ebs["EbsOptimizedInfo"]["MaximumBandwidthInMbps"]
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    if gpus:
        out["gpus"] = [
            {
                "name": g["Name"],
                "manufacturer": g["Manufacturer"],
                "count": g["Count"],
                "memoryMiB": g.get("MemoryInfo", {}).get("SizeInMiB", 0),
            }
            for g in gpus
        ]
    neuron = info.get("NeuronInfo", {}).get("NeuronDevices", [])
    if neuron:
        out["neuron"] = [
            {"name": d["Name"], "count": d["Count"], "cores": d.get("CoreInfo", {}).get("Count", 0)}
            for d in neuron
        ]
    efa = net.get("EfaInfo", {}).get("MaximumEfaInterfaces")
    if efa:
        out["efa"] = efa
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moto-dir", required=True, help="the installed moto package directory")
    ap.add_argument("--pricing-zip", required=True, help="karpenter-provider-aws module zip")
    ap.add_argument("--module-version", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    resources = f"{a.moto_dir}/ec2/resources"
    types = load_gz_json(f"{resources}/instance_types.json.gz")
    offerings = load_gz_json(f"{resources}/instance_type_offerings/availability-zone/{a.region}.json.gz")
    zones_of = {}
    for o in offerings:
        zones_of.setdefault(o["InstanceType"], set()).add(o["Location"])

    with zipfile.ZipFile(a.pricing_zip) as z:
        member = [n for n in z.namelist() if n.endswith("pkg/providers/pricing/zz_generated.pricing_aws.go")]
        if len(member) != 1:
            sys.exit("gen_catalog: zz_generated.pricing_aws.go not found in the module zip")
        prices = parse_prices(z.read(member[0]).decode("utf-8"), a.region)

    skipped = {"no price": 0, "not offered in region": 0, "no kubernetes arch": 0, "no on-demand": 0}
    entries = []
    for name in sorted(types):
        info = types[name]
        if name not in prices:
            skipped["no price"] += 1
            continue
        if name not in zones_of:
            skipped["not offered in region"] += 1
            continue
        if not any(arch in KUBE_ARCH for arch in info["ProcessorInfo"]["SupportedArchitectures"]):
            skipped["no kubernetes arch"] += 1
            continue
        facts = raw_facts(info)
        if "on-demand" not in facts["usage"]:
            skipped["no on-demand"] += 1
            continue
        facts["zones"] = sorted(zones_of[name])
        facts["onDemandPrice"] = prices[name]
        entries.append(facts)

    doc = {
        "region": a.region,
        "sources": {
            "instanceTypes": f"pypi moto=={importlib.metadata.version('moto')} moto/ec2/resources/instance_types.json.gz",
            "offerings": f"pypi moto=={importlib.metadata.version('moto')} "
            f"moto/ec2/resources/instance_type_offerings/availability-zone/{a.region}.json.gz",
            "onDemandPrices": f"go module github.com/aws/karpenter-provider-aws@{a.module_version} "
            "pkg/providers/pricing/zz_generated.pricing_aws.go",
        },
        "instanceTypes": entries,
    }
    with open(a.out, "w", encoding="utf-8") as f:
        # One instance type per line: compact, yet a regeneration diffs line by line.
        f.write("{\n")
        f.write(f'"region": {json.dumps(doc["region"])},\n')
        f.write(f'"sources": {json.dumps(doc["sources"], sort_keys=True)},\n')
        f.write('"instanceTypes": [\n')
        f.write(",\n".join(json.dumps(e, sort_keys=True, separators=(",", ":")) for e in entries))
        f.write("\n]}\n")
    print(f"gen_catalog: wrote {len(entries)} instance types to {a.out}; skipped {skipped}", file=sys.stderr)


if __name__ == "__main__":
    main()
