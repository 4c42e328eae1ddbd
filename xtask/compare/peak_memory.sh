#!/bin/bash
# Peak anonymous and file-backed resident memory of a command, sampled every 50 ms from
# /proc/PID/status (Linux). File-backed pages are the page cache a model file is read through:
# the kernel reclaims them under pressure; anonymous memory is what the process holds.
# Usage: xtask/compare/peak_memory.sh COMMAND ARGS...
"$@" > /dev/null & pid=$!
ma=0; mf=0
while kill -0 $pid 2>/dev/null; do
  read a f < <(awk '/RssAnon/{a=$2} /RssFile/{f=$2} END{print a+0, f+0}' /proc/$pid/status 2>/dev/null)
  [ "${a:-0}" -gt $ma ] && ma=$a; [ "${f:-0}" -gt $mf ] && mf=$f
  sleep 0.05
done
wait $pid; echo "exit $? peak RssAnon ${ma} kB, peak RssFile ${mf} kB"
