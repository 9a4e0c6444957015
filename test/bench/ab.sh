#!/bin/bash
# A/B of export and import: the commit before the engine (wt-base) vs main, runs alternated
# (base, main, base, main...) so the machine's load falls on both alike. Prints wall, user+sys, max RSS.
# Setup: the corpus registry on 127.0.0.1:5000 (test/bench/corpus/build-corpus.sh); /work/main built;
# the base in a worktree: git worktree add --detach /work/wt-base c57473b^ && cd /work/wt-base &&
# npm ci && npx tsc -p tsconfig.json (c57473b is the engine's first commit).
set -e
R="127.0.0.1:5000/library/base:bookworm 127.0.0.1:5000/library/redis:7 127.0.0.1:5000/library/mysql:8 127.0.0.1:5000/library/mysql:8-patched 127.0.0.1:5000/library/jdk:17 127.0.0.1:5000/library/base:bookworm-rebuilt 127.0.0.1:5000/library/redis:7-rebuilt"
W=/var/tmp/ab
RUNS=${RUNS:-5}
mkdir -p $W
for i in $(seq $RUNS); do
  for v in base main; do
    d=/work/wt-$v; [ $v = main ] && d=/work/main
    rm -rf $W/cache-$v $W/$v.tar.zst; sync
    /usr/bin/time -f "export $v %e %U %S %M" -a -o $W/times.txt node $d/bin/ferry.js export -q --cache-dir $W/cache-$v -o $W/$v.tar.zst $R
    sync
  done
done
cmp $W/base.tar.zst $W/main.tar.zst && echo "bundle bytes identical"
for i in $(seq $RUNS); do
  for v in base main; do
    d=/work/wt-$v; [ $v = main ] && d=/work/main
    [ -d $W/root-$v ] && mv $W/root-$v $W/old-$v-$i-$RANDOM
    /usr/bin/time -f "import $v %e %U %S %M" -a -o $W/times.txt node $d/bin/ferry.js --root $W/root-$v import -q $W/main.tar.zst > /dev/null
    sync
  done
done
python3 - <<'PY'
import statistics as st
rows=[l.split() for l in open('/var/tmp/ab/times.txt') if l.strip() and not l.startswith('Command')]
for op in ('export','import'):
  for v in ('base','main'):
    r=[x for x in rows if x[0]==op and x[1]==v]
    if not r: continue
    wall=st.median(float(x[2]) for x in r); cpu=st.median(float(x[3])+float(x[4]) for x in r); rss=st.median(int(x[5]) for x in r)/1024
    print(f"{op} {v}: n={len(r)} wall {wall:.2f}s cpu {cpu:.2f}s rss {rss:.0f}MB")
  b=[x for x in rows if x[0]==op and x[1]=='base']; m=[x for x in rows if x[0]==op and x[1]=='main']
  if b and m:
    ratios=[float(mm[2])/float(bb[2]) for bb,mm in zip(b,m)]
    cr=[(float(mm[3])+float(mm[4]))/(float(bb[3])+float(bb[4])) for bb,mm in zip(b,m)]
    print(f"{op} main/base per pair: wall median {st.median(ratios):.3f} {['%.2f'%x for x in ratios]}; cpu median {st.median(cr):.3f}")
PY
