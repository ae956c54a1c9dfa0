#!/usr/bin/env bash
# How the from-scratch checkpoints were trained: the synthetic_* ones shipped in vseg_core/weights/, and the
# CamVid ones that scripts/train_lite.sh's ImageNet-initialised models replaced (the branches on one GPU, where
# the runs go in parallel because these small models leave most of it idle; the Accel fusion on a 2-core
# CPU). Every run starts from random
# weights: nothing pretrained is available offline, so the papers' fine-tuning learning rates
# (Adam 5e-5, SGD 5e-4) are replaced by Adam at 1e-3.
#
#   scripts/train_weights.sh branches OUT [CAMVID_ROOT]   # single-frame and ConvLSTM models, DeepLab branches
#   scripts/train_weights.sh accel OUT [CAMVID_ROOT]      # Accel-18 on the branches of the first stage
#   scripts/train_weights.sh finish OUT CAMVID_ROOT       # the CamVid LSTM-ICNet runs' last 750 steps (OUT/finish/)
#
# OUT/<dataset>_<name>/ holds each run (checkpoint.*, best.*, log.jsonl). Without CAMVID_ROOT only the
# synthetic video is used. PYTHON picks the interpreter (default python3); STEPS_PERCENT shortens runs.
# `python scripts/pack_weights.py OUT NAME...` then copies runs into vseg_core/weights/.
set -euo pipefail
stage=${1:?stage: branches, accel or finish}
out=${2:?output folder}
camvid=${3:-}
python=${PYTHON:-python3}
percent=${STEPS_PERCENT:-100}
mkdir -p "$out"

common=(--optimizer adam --lr 1e-3 --warmup 100 --hflip --checkpoint-every 250 --quiet)
synthetic=(--dataset synthetic --height 128 --width 256 --batch-size 4 --color-jitter 0.1 --val-every 500 --workers 2)
camvid_args=(--dataset camvid --root "$camvid" --crop 320x448 --scale 0.75:1.25 --batch-size 8 --val-every 500 --workers 1)

run() {  # run NAME MODEL ARGS...: one training run in the background, its output in OUT/NAME.log
    local name=$1 model=$2
    shift 2
    "$python" -m vseg_core.cli train "$model" --out "$out/$name" "${common[@]}" "$@" >"$out/$name.log" 2>&1 &
}

steps() {  # steps N: N scaled by STEPS_PERCENT, at least 5 (a phase split needs them)
    local n=$(($1 * percent / 100))
    echo $((n > 5 ? n : 5))
}

case $stage in
    branches)
        for data in synthetic camvid; do
            if [[ $data == synthetic ]]; then args=("${synthetic[@]}"); n=$(steps 1200); else
                [[ -n $camvid ]] || continue
                args=("${camvid_args[@]}"); n=$(steps 2000)
            fi
            run "${data}_icnet" icnet,width=0.25 "${args[@]}" --clip-length 1 --steps "$n"
            run "${data}_lstm_icnet_v2" lstm_icnet_v2,width=0.25 "${args[@]}" --clip-length 4 --steps "$n"
            run "${data}_lstm_icnet_v2_separable" lstm_icnet_v2,width=0.25,conv=separable "${args[@]}" \
                --clip-length 4 --steps "$n"
            run "${data}_deeplab18" deeplab18,width=0.25 "${args[@]}" --clip-length 1 --steps "$n"
            run "${data}_deeplab101" deeplab101,width=0.25 "${args[@]}" --clip-length 1 --steps "$n"
        done
        ;;
    accel)
        for data in synthetic camvid; do
            if [[ $data == synthetic ]]; then args=("${synthetic[@]}" --workers 1); n=$(steps 250); offset=4; else
                [[ -n $camvid ]] || continue
                args=("${camvid_args[@]}" --batch-size 2); n=$(steps 300); offset=1:4
            fi
            # Accel on trained branches: reference = DeepLab-101, update = DeepLab-18, then the 1x1 score
            # fusion alone (minutes on a CPU; lr 1e-2: its 2C -> C weights start near 0 and must reach ~1),
            # on clips from a keyframe to a labelled frame `offset` later.
            # The branches stay frozen: a run that went on to train everything with labels only on
            # non-key frames left the keyframe output itself untrained (CamVid val mIoU 0.10 on
            # keyframes); training the reference needs offsets that include 0 (--keyframe-offset 0:4).
            run "${data}_accel18" accel18,width=0.25,motion=dis "${args[@]}" --clip-length 5 \
                --keyframe-offset "$offset" --lr 1e-2 --warmup 20 --checkpoint-every 50 --val-every "$n" \
                --init "reference=$out/${data}_deeplab101/checkpoint.safetensors" \
                --init "update=$out/${data}_deeplab18/checkpoint.safetensors" \
                --phase "fusion:$n" --steps "$n"
        done
        ;;
    finish)
        # The CamVid LSTM-ICNet runs stopped at step 1250 of 2000 when the GPU lease ended; their last 750
        # steps ran on a CPU from the learning rate the poly schedule had reached (1e-3 x 0.375^0.9), whose
        # own poly decay then follows the original tail; only Adam's moments start afresh.
        [[ -n $camvid ]] || { echo "finish needs CAMVID_ROOT" >&2; exit 2; }
        mkdir -p "$out/finish"
        for name in camvid_lstm_icnet_v2 camvid_lstm_icnet_v2_separable; do
            model=lstm_icnet_v2,width=0.25
            [[ $name == *separable ]] && model+=",conv=separable"
            run "finish/$name" "$model" "${camvid_args[@]}" --clip-length 4 --steps "$(steps 750)" --lr 4.1e-4 \
                --warmup 0 --seed 1 --val-every "$(steps 750)" --init "$out/$name/checkpoint.safetensors"
        done
        ;;
    *)
        echo "unknown stage $stage (branches, accel or finish)" >&2
        exit 2
        ;;
esac
status=0
for job in $(jobs -p); do wait "$job" || status=1; done
for log in "$out"/*.log; do echo "== $log"; tail -n 3 "$log"; done
exit $status
