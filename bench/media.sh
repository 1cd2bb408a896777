#!/usr/bin/env bash
# Video tasks benchmark, through the gateway of `zocalo up`:
#
#   1. upload throughput: a BENCH_UPLOAD_MB file (an MP4 header, then
#      random bytes) uploaded BENCH_ROUNDS times with curl, against copying
#      the same file on the same disk (`cp` + sync: what storing it costs at
#      least);
#   2. end-to-end time per clip (upload → queued → worker → processed, seen
#      on the task's event stream, as a client following it would) against running the same ffprobe + ffmpeg
#      command by hand on the same clip: the worker logs its exact ffmpeg
#      arguments (debug level) and this script replays them. One worker, one
#      conversion at a time, ours and by-hand runs alternating;
#   3. BENCH_CONCURRENT uploads of a small clip at once from 20 users (curl
#      with xargs -P): answers by status and uploads per second.
#
# Only 127.0.0.1 is targeted. Raw outputs stay in a temp dir (printed).
# Knobs: BENCH_CLIPS=5 BENCH_CLIP_SECS=10 BENCH_UPLOAD_MB=200 BENCH_ROUNDS=3
# BENCH_CONCURRENT=100 BENCH_SKIP_BUILD=1 BENCH_BIN=path (another binary).
set -euo pipefail

GW_PORT=18080
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIPS=${BENCH_CLIPS:-5}
CLIP_SECS=${BENCH_CLIP_SECS:-10}
UPLOAD_MB=${BENCH_UPLOAD_MB:-200}
ROUNDS=${BENCH_ROUNDS:-3}
CONCURRENT=${BENCH_CONCURRENT:-100}
PASSWORD=bench-password-1

unset_zocalo_env
for tool in curl jq ffmpeg ffprobe python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
require_ports_free "$GW_PORT"

OUT=$(mktemp -d /tmp/zocalo-bench-media.XXXXXX)
DATA="$OUT/data"
STACK_LOG="$OUT/zocalo.log"
cleanup() {
    stop_zocalo
    [[ -n $BIN_COPY ]] && rm -rf "$BIN_COPY"
    rm -rf "$DATA" "$OUT/big.bin" "$OUT/hand"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$BENCH_BIN
    BIN_COPY=$(mktemp -d /tmp/zocalo-bench-bin.XXXXXX)
    cp "$BIN" "$BIN_COPY/zocalo"
else
    build_and_copy_binary
fi
machine_info "ffmpeg: $(ffmpeg -version | head -1)" "clips: $CLIPS x ${CLIP_SECS}s 640x360 with sound" >"$OUT/machine.txt"
log "raw outputs in $OUT"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

log "making the test files"
for i in $(seq "$CLIPS"); do
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=30:duration=$CLIP_SECS" \
        -f lavfi -i "sine=frequency=$((200 + 40 * i)):duration=$CLIP_SECS" \
        -c:v libx264 -preset veryfast -c:a aac -shortest "$OUT/clip$i.mp4"
done
ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc=size=96x72:rate=10:duration=1 \
    -c:v libx264 -preset ultrafast "$OUT/tiny.mp4"
{
    printf '\0\0\0\x18ftypisom\0\0\x02\0isomiso2'
    head -c $((UPLOAD_MB * 1024 * 1024 - 24)) /dev/urandom
} >"$OUT/big.bin"

log "starting zocalo up"
mkdir -p "$DATA"
ZOCALO_LOG__FORMAT=json ZOCALO_LOG__FILTER="warn,zocalo_media::ffmpeg=debug,zocalo_media::processing=info" \
    ZOCALO_MEDIA__WORKER_CONCURRENCY=1 ZOCALO_MEDIA__MAX_UPLOAD_BYTES=$((1024 * 1024 * 1024)) \
    ZOCALO_MEDIA__SCRATCH_DIR="$DATA/scratch" \
    "$BIN_COPY/zocalo" up --port "$GW_PORT" --data-dir "$DATA" >"$OUT/stdout.txt" 2>"$STACK_LOG" &
ZOCALO_PID=$!
wait_ready "$GW/.well-known/jwks.json" gateway

register bench@example.com "$PASSWORD" Bench >/dev/null
TOKEN=$(login bench@example.com "$PASSWORD")

upload() { # file -> "http_code seconds task_id"
    curl -sS -o "$OUT/upload.json" -w '%{http_code} %{time_total}' --max-time 600 \
        -H "authorization: Bearer $TOKEN" -F "file=@$1;filename=$(basename "$1")" "$GW/api/tasks"
    echo " $(jq -r '.id // empty' "$OUT/upload.json")"
}

log "1. upload throughput ($UPLOAD_MB MiB x $ROUNDS)"
echo "round upload_s copy_s" >"$OUT/upload.txt"
for r in $(seq "$ROUNDS"); do
    read -r code secs id < <(upload "$OUT/big.bin")
    [[ $code == 201 ]] || die "upload answered $code: $(cat "$OUT/upload.json")"
    api DELETE "/api/tasks/$id" "$TOKEN" >/dev/null || true   # may be processing: GC-free either way
    start=$(now)
    cp "$OUT/big.bin" "$DATA/copy.bin" && sync "$DATA/copy.bin"
    copy=$(elapsed "$start" "$(now)")
    rm -f "$DATA/copy.bin"
    echo "$r $secs $copy" | tee -a "$OUT/upload.txt" >&2
done
# The big files are not videos: let the worker fail them before timing clips.
sleep 2

log "2. end-to-end per clip vs ffmpeg by hand"
echo "clip ours_s by_hand_s task" >"$OUT/clips.txt"
mkdir -p "$OUT/hand"
for i in $(seq "$CLIPS"); do
    start=$(now)
    read -r code _ id < <(upload "$OUT/clip$i.mp4")
    [[ $code == 201 ]] || die "clip upload answered $code"
    # The stream ends after the event that settles the task.
    curl -sSN --max-time 600 -H "authorization: Bearer $TOKEN" "$GW/api/tasks/$id/events" \
        >"$OUT/events$i.txt"
    ours=$(elapsed "$start" "$(now)")
    status=$(grep '^data: ' "$OUT/events$i.txt" | tail -1 | cut -c7- | jq -r .status)
    [[ $status == processed ]] || die "clip $i failed: $(api GET "/api/tasks/$id" "$TOKEN")"
    # The worker's exact arguments, with this clip and another output.
    args=$(grep '"running ffmpeg"' "$STACK_LOG" | tail -1 | jq -r '.fields.args // .args')
    mapfile -t argv < <(python3 -c '
import json, sys
args = json.loads(sys.argv[1])
args[args.index("-i") + 1] = "file:" + sys.argv[2]
args[-1] = "file:" + sys.argv[3]
print("\n".join(args))' "$args" "$OUT/clip$i.mp4" "$OUT/hand/out$i.mp4")
    start=$(now)
    ffprobe -v error -print_format json -show_format -show_streams "$OUT/clip$i.mp4" >/dev/null
    ffmpeg "${argv[@]}" >/dev/null
    hand=$(elapsed "$start" "$(now)")
    echo "$i $ours $hand $id" | tee -a "$OUT/clips.txt" >&2
done

log "3. $CONCURRENT concurrent uploads from 20 users"
for u in $(seq 20); do
    register "user$u@example.com" "$PASSWORD" "User $u" >/dev/null
    login "user$u@example.com" "$PASSWORD" >"$OUT/token$u"
done
start=$(now)
seq "$CONCURRENT" | xargs -P "$CONCURRENT" -I{} sh -c '
    u=$(( ({} % 20) + 1 ))
    curl -s -o /dev/null -w "%{http_code}\n" --max-time 120 \
        -H "authorization: Bearer $(cat '"$OUT"'/token$u)" \
        -F "file=@'"$OUT"'/tiny.mp4;filename=tiny.mp4" '"$GW"'/api/tasks' >"$OUT/concurrent.txt"
took=$(elapsed "$start" "$(now)")
echo "took_s $took" >>"$OUT/concurrent.txt"

grep '"attempt timed"' "$STACK_LOG" >"$OUT/steps.jsonl" || true

python3 - "$OUT" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("```")
print((out / "machine.txt").read_text().strip())
print("```\n")
rows = [l.split() for l in (out / "upload.txt").read_text().splitlines()[1:]]
size_mib = (out / "big.bin").stat().st_size / 2**20 if (out / "big.bin").exists() else None
up = [float(r[1]) for r in rows]; cp = [float(r[2]) for r in rows]
print("| upload | median s | MiB/s | reference (cp + sync) s | ratio |")
print("|---|---|---|---|---|")
mb = size_mib or 0
print(f"| {mb:.0f} MiB through the gateway | {statistics.median(up):.2f} | {mb / statistics.median(up):.0f} | {statistics.median(cp):.2f} | {statistics.median(up) / statistics.median(cp):.2f}x |")
print()
rows = [l.split() for l in (out / "clips.txt").read_text().splitlines()[1:]]
steps = {}
for line in (out / "steps.jsonl").read_text().splitlines():
    record = json.loads(line)
    fields = record.get("fields", record)
    steps[fields.get("task")] = fields
def ms(task, step):
    value = steps.get(task, {}).get(step + "_ms")
    return "" if value is None else str(value)
print("| clip | ours (upload → processed) s | ffprobe + ffmpeg by hand s | overhead | worker steps: fetch / probe / transcode / store ms |")
print("|---|---|---|---|---|")
for clip, ours, hand, task in rows:
    parts = " / ".join(ms(task, s) for s in ("fetch", "probe", "transcode", "store"))
    print(f"| {clip} | {float(ours):.2f} | {float(hand):.2f} | {float(ours) / float(hand) - 1:+.1%} | {parts} |")
ours = [float(r[1]) for r in rows]; hand = [float(r[2]) for r in rows]
print(f"| median | {statistics.median(ours):.2f} | {statistics.median(hand):.2f} | {statistics.median(ours) / statistics.median(hand) - 1:+.1%} | |")
print()
lines = (out / "concurrent.txt").read_text().split()
took = float(lines[lines.index("took_s") + 1])
codes = [c for c in lines[: lines.index("took_s")]]
counts = {c: codes.count(c) for c in sorted(set(codes))}
print(f"concurrent uploads: {len(codes)} in {took:.2f} s = {len(codes) / took:.1f} uploads/s; answers {counts}")
PY
log "done; raw outputs in $OUT"
