"""Every key of the recipe schema is either read outside src/plm/config/ or carries a reason (the torchtitan
frozen-config idea, for a hand-written schema): a new key that neither acts nor says why it does not fails here.

The schema is src/plm/config/args.h: each section struct lists its keys in `visit` as v("key", member) or
v("key", member, "reason"). A leaf key acts when its member is read outside config/ (`.member` or `->member` in
src/ or the CLI), or when its section's visit() is called outside config/ (the env section is applied that way).
Usage: config_keys.py REPO_ROOT"""
import os
import re
import sys

root = sys.argv[1]
args_h = open(os.path.join(root, "src/plm/config/args.h")).read()

# struct Name { ... }  ->  its body, to find each section's visit() entries and member types.
structs = {}
for m in re.finditer(r"^struct (\w+) \{(.*?)^\};", args_h, re.S | re.M):
    structs[m.group(1)] = m.group(2)
config_dir = os.path.normpath(os.path.join(root, "src/plm/config"))
sources = []
for dirpath, _, files in os.walk(os.path.join(root, "src")):  # the library and the CLI, config/ excepted
    if os.path.normpath(dirpath).startswith(config_dir):
        continue
    sources += [open(os.path.join(dirpath, f)).read() for f in files if f.endswith((".cpp", ".h"))]
code = "\n".join(sources)
# Keys that validate() refuses unless they have PLM's value (c.require on the member, naming the key) act too.
validate = open(os.path.join(root, "src/plm/config/validate.cpp")).read()

# Keys that PLM's own recipes set, whose every value plm already honours without reading them (a reason would be
# reported on every PLM recipe): args.h marks them "not read".
HONOURED = {
    "tokenizer_name": "the tokenizer's kind comes from the file at data.tokenizer_path (tiktoken BPE or sentencepiece)",
    "is_consolidated_model": "the kind of init_ckpt_path (PLM consolidated, Hugging Face, step folder) is read from "
                             "its files",
}

problems, acting, reasoned = [], 0, 0
for name, body in structs.items():
    entries = re.findall(r'v\("(\w+)",\s*(\w+)(\s*,\s*(?:"[^"]*"|\w+))?', body.replace("\n", " "))
    if not entries:
        continue
    # The section's visit() called outside config/ on a member of its type (the env section is applied so).
    holders = [m.group(1) for s in structs.values()
               for m in re.finditer(r"^\s*(?:std::optional<)?" + name + r">?\s+(\w+)\b", s, re.M)]
    section_visited = any(re.search(r"\b" + h + r"\)?(?:\.|->)visit\(", code) for h in holders)
    for key, member, reason in entries:
        decl = re.search(r"^\s*([\w:<>, ]+?)\s+" + member + r"\b\s*(?:=|;|\{)", body, re.M)
        type_name = decl.group(1).strip() if decl else ""
        inner = re.sub(r"^std::optional<(.*)>$", r"\1", type_name)
        if inner in structs:  # a section: its own keys are checked
            continue
        if reason or key in HONOURED:
            reasoned += 1
            continue
        if section_visited or re.search(r"(?:\.|->)" + member + r"\b(?!\s*\()", code) or \
                re.search(r"c\.require\([^;]*\b" + member + r"\b[^;]*\"" + r"[^\"]*\." + key + '"', validate):
            acting += 1
            continue
        problems.append(f"{name}: key '{key}' (member {member}) is never read outside src/plm/config/ and has no "
                        f"reason in its visit() entry")
print(f"{acting} keys read outside config/, {reasoned} with a reason, {len(problems)} with neither")
for p in problems:
    print("FAIL: " + p)
sys.exit(1 if problems else 0)
