# Sourced by the W3 table scripts (fedins_table.sh, sfprompt_table.sh): with $build and
# $runs set, checks that $build has fl-sim, makes $runs and pretrains the W3 backbone
# into $runs/backbone.flps unless it is there (`fl-sim pretrain --preset
# fmnist-vit-shift`, the log in $runs/pretrain.log). Sets fl_sim and backbone.
fl_sim="$build/simulations/fl-sim"
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
mkdir -p "$runs"
backbone="$runs/backbone.flps"
if [ ! -f "$backbone" ]; then
  "$fl_sim" pretrain --preset fmnist-vit-shift --out "$backbone" > "$runs/pretrain.log" 2>&1 ||
    { echo "pretraining failed: $(tail -1 "$runs/pretrain.log")" >&2; exit 1; }
fi
