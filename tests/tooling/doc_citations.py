"""Every document a source comment cites is in the repository, and every cited section exists.

A clone of the repository must explain itself: comments cite docs/reference.md (the reference behaviour, by
section number), docs/ARCHITECTURE.md (its sections and numbered sharding pitfalls) and the other files under docs/.
This fails on a citation of a file that is not in the repository (notes kept elsewhere, an issue tracker), of a
docs/ file that does not exist, or of a reference.md section or a sharding pitfall that has no heading.
Usage: python tests/tooling/doc_citations.py REPO_ROOT
"""
import pathlib
import re
import subprocess
import sys

root = pathlib.Path(sys.argv[1]).resolve()
this = pathlib.Path(__file__).resolve()
files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, check=True,
                       capture_output=True, text=True).stdout.split()
# Documents that live outside the repository (the founding notes) and trackers: never cited.
outside = re.compile(r"plm-spec|fsdp-notes|toolchain-notes|user-needs|anchors\.md|gpu-and-finetuning-leads|"
                     r"\bstyle\.md|(?<![A-Z_/])architecture\.md|\.\./shared|\bissue (?:#\d|\"|\d)")
docs_file = re.compile(r"(?<![\w/.-])docs/([\w./-]+\.md)")
section = re.compile(r"docs/reference\.md,? (?:section )?(\d+(?:\.\d+)?(?:(?:,\s*| and |/)\d+(?:\.\d+)?)*)")
pitfall = re.compile(r"sharding pitfalls? (\d+)")

reference = (root / "docs/reference.md").read_text()
headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?) ", reference, re.M))
architecture = (root / "docs/ARCHITECTURE.md").read_text()
pitfalls = set(re.findall(r"^#+ Pitfall (\d+)", architecture, re.M))

problems = []
for name in files:
    path = root / name
    if path.resolve() == this or path.suffix in {".model", ".png", ".jpg", ".mp4", ".safetensors"} or not path.is_file():
        continue
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        continue
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        if m := outside.search(line):
            problems.append(f"{where}: cites '{m.group(0)}', which is not in the repository: {line.strip()}")
        for m in docs_file.finditer(line):
            if not (root / "docs" / m.group(1)).is_file():
                problems.append(f"{where}: cites docs/{m.group(1)}, which does not exist")
        for m in section.finditer(line):
            for n in re.split(r",\s*| and |/", m.group(1)):
                if n not in headings:
                    problems.append(f"{where}: cites docs/reference.md {n}, which has no such section")
        for m in pitfall.finditer(line):
            if m.group(1) not in pitfalls:
                problems.append(f"{where}: cites sharding pitfall {m.group(1)}, which docs/ARCHITECTURE.md lacks")

print(f"{len(files)} files checked; reference.md has {len(headings)} numbered sections, "
      f"ARCHITECTURE.md {len(pitfalls)} sharding pitfalls")
for p in problems:
    print("FAIL:", p)
sys.exit(1 if problems else 0)
