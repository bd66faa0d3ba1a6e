#!/bin/sh
# prelink_private.sh OUT LD OBJCOPY NM PATTERN INPUT...
# Links the INPUT objects and archives into one relocatable object OUT (ld -r) and hides every symbol whose mangled
# name contains PATTERN from the rest of the process: ordinary symbols become local; GNU-unique ones (which the
# dynamic loader unifies across libraries and objcopy cannot localize) are renamed with a plm_private_ prefix.
set -eu
out=$1 ld=$2 objcopy=$3 nm=$4 pattern=$5
shift 5
"$ld" -r -o "$out.all" "$@"
"$nm" "$out.all" | awk -v p="$pattern" '$2 == "u" && index($3, p) { print $3, "plm_private_" $3 }' > "$out.unique"
"$objcopy" --wildcard --localize-symbol="*$pattern*" --redefine-syms="$out.unique" "$out.all" "$out"
rm -f "$out.all"
