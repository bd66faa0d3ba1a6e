"""The container and launch examples are correct as files (docker/README.md, docs/deploy/README.md):

- docker/Dockerfile.cuda passes hadolint (and hadolint does fail a Dockerfile with the usual mistakes, so a silent
  linter cannot pass it), builds with -DPLM_CUDA=ON and has plm as its exec-form entry point;
- the Kubernetes manifests match the schema of their kind (tests/tooling/deploy_schemas.json: the fields of
  Kubeflow's PyTorchJob and TrainJob that these examples use, with their types), launch with torchrun's environment
  contract and no wrapper (the command is torchrun --no-python <the image's plm> train RECIPE k=v), ask for as many
  GPUs per node as torchrun starts processes, and name a recipe whose overrides `plm config print` accepts;
- the SLURM scripts pass shellcheck.
Usage: python tests/tooling/deploy_lint.py path/to/plm   (run from the repository root)
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLM = sys.argv[1]
VENV_BIN = Path(sys.executable).parent
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
        print("FAIL:", message)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# 1. The Dockerfile.
hadolint = VENV_BIN / "hadolint"
dockerfile = ROOT / "docker/Dockerfile.cuda"
if not hadolint.exists():
    check(False, f"no hadolint at {hadolint}: run scripts/setup.sh")
else:
    r = run([str(hadolint), str(dockerfile)])
    check(r.returncode == 0, f"hadolint {dockerfile}:\n{r.stdout}{r.stderr}")
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as bad:
        bad.write("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\nENTRYPOINT plm\n")
        bad.flush()
        check(run([str(hadolint), bad.name]).returncode != 0, "hadolint passes a Dockerfile it should fail")
text = dockerfile.read_text()
entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M)
check(entry is not None, "Dockerfile.cuda has no exec-form ENTRYPOINT")
image_plm = entry.group(1) if entry else "/opt/plm/build/plm"
check("-DPLM_CUDA=ON" in text, "Dockerfile.cuda does not build with -DPLM_CUDA=ON")
base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M)
check(base is not None and "cuda" in base.group(1) and "devel" in base.group(1) and "FROM ${CUDA_IMAGE}" in text,
      "Dockerfile.cuda is not on a CUDA devel base (ARG CUDA_IMAGE=...devel..., FROM ${CUDA_IMAGE})")

# 2. The manifests.
schemas = json.loads((ROOT / "tests/tooling/deploy_schemas.json").read_text())


def containers(doc):
    if doc["kind"] == "PyTorchJob":
        for role, spec in doc["spec"]["pytorchReplicaSpecs"].items():
            for c in spec["template"]["spec"]["containers"]:
                yield role, c, int(doc["spec"]["nprocPerNode"]), c.get("resources", {})
    else:
        t = doc["spec"]["trainer"]
        yield "trainer", t, int(t["numProcPerNode"]), t.get("resourcesPerNode", {})


manifests = sorted((ROOT / "docs/deploy").glob("*.yaml"))
check(len(manifests) >= 2, "docs/deploy has fewer than two manifests")
for path in manifests:
    doc = yaml.safe_load(path.read_text())
    name = path.relative_to(ROOT)
    schema = schemas.get(doc.get("kind", ""))
    if schema is None:
        check(False, f"{name}: kind {doc.get('kind')!r} has no schema in deploy_schemas.json")
        continue
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        check(False, f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        continue
    for role, c, nproc, resources in containers(doc):
        cmd = c["command"]
        where = f"{name} ({role})"
        check(cmd[:2] == ["torchrun", "--no-python"], f"{where}: the command does not start with torchrun --no-python")
        check(len(cmd) > 4 and cmd[2] == image_plm and cmd[3] == "train",
              f"{where}: the command does not run the image's {image_plm} train")
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")
        check(gpus == nproc, f"{where}: {gpus} GPUs per node but {nproc} processes per node")
        recipe, overrides = cmd[4], cmd[5:]
        check((ROOT / recipe).is_file(), f"{where}: no recipe {recipe} in the repository")
        r = run([PLM, "config", "print", str(ROOT / recipe), *overrides], cwd=ROOT)
        check(r.returncode == 0, f"{where}: plm config print refuses the command's recipe or keys: {r.stderr.strip()}")

# 3. The SLURM scripts.
scripts = [ROOT / "scripts/slurm/train.sbatch", *sorted((ROOT / "docs/deploy").glob("*.sbatch"))]
r = run(["shellcheck", *map(str, scripts)])
check(r.returncode == 0, f"shellcheck:\n{r.stdout}{r.stderr}")

print(f"deploy lint: {len(manifests)} manifests, {len(scripts)} SLURM scripts, Dockerfile.cuda:",
      "all checks passed" if not failures else f"{len(failures)} failed")
sys.exit(1 if failures else 0)
