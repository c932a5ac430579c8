#!/usr/bin/env bash
# Regenerate the comparison tables and figures: run the experiment presets (conf/experiment/), then
# aggregate them with learnroot-table, draw them with learnroot-figures and write the HTML report of each
# stage with learnroot-report (into $REPORTS/<name>/report.html; open it from disk).
#
# Usage: bash scripts/reproduce_tables.sh [--help] [--dry-run] [real] [override ...]
#
#   bash scripts/reproduce_tables.sh                      # shapes benchmark, CPU: about 2 min on 2 cores
#   LIMIT=4 bash scripts/reproduce_tables.sh              # quick check: into outputs/reproduce/, not results/
#   DATA=/data/imagenet/val WEIGHTS=/data/weights bash scripts/reproduce_tables.sh   # ImageNet
#   bash scripts/reproduce_tables.sh cluster=slurm hydra.launcher.partition=gpu     # extra overrides
#   bash scripts/reproduce_tables.sh --dry-run            # print what would run and where, run nothing
#   SHARED=../shared/data bash scripts/reproduce_tables.sh real   # the real trained networks (hours on a CPU)
#
# Mode real (the learned root judged on real networks, docs/METHOD.md section 4), for each setup of
# conf/setup/ in SETUPS:
#   1. search: on the TUNING part (dataset.part=tune, TUNE_LIMIT images): experiment=root_search (the
#      learned root's loss x steps x lr x layers), the former MSE default, its threshold control, the
#      paper's preset, the shuffled-relevance control, and dtd_zplus / lrp_gamma / dtd_montavon;
#      table $RESULTS/tables/real_search_<setup>.{md,csv,tex} (+ _paired: minus dtd_zplus, bootstrap CIs)
#   2. test: on the disjoint TEST part (TEST_LIMIT images): every method (experiment=real_models,
#      METHODS) and the learned root's controls and presets (experiment=real_controls); tables
#      $RESULTS/tables/real_<setup>.{md,csv,tex} and real_<setup>_vs_<baseline>_paired.* for the
#      baselines in BASELINES; heatmap grid $RESULTS/figures/real_<setup>_heatmaps.{png,pdf} (shows the
#      shared images: .gitignore keeps it out of git)
#      The methods of BIAS_METHODS run once more with method.bias=true (biases in the denominators, the
#      convention of zennit and the LRP Toolbox; METHODS run with the default, the bias-free DTD
#      convention); a baseline written <method>+bias in BASELINES is that method with biases
#      (table ..._vs_<method>_bias_paired.*), a bare name of BIAS_METHODS the one without
#   3. sanity: on the test part (SANITY_LIMIT images, default 100) of each of SANITY_SETUPS (default
#      "lenet5_mnist small_cnn_shapes"): experiment=sanity (sparse attack, signal/root, class
#      sensitivity, cascading randomisation for ours, dtd_zplus, lrp_gamma, dtd_montavon) and ours with
#      the learned pixel root, and the four methods again under a stronger attack (k 5000 at 224 px,
#      epsilon 0.1, step 0.02); tables $RESULTS/tables/real_sanity_<setup>{,_vs_dtd_zplus_paired}.* with
#      the scores in SANITY_METRICS (add object_share for mobilenet_coco),
#      figure $RESULTS/figures/real_sanity_<setup>_randomisation.{png,pdf}
#   4. conventions (not in the default STAGES): on the TUNING part (TUNE_LIMIT images) of each of
#      SEARCH_SETUPS: BIAS_METHODS with method.bias=false,true and dtd_zplus; tables
#      $RESULTS/tables/real_conventions_<setup>.* (+ _paired: minus dtd_zplus) and
#      real_conventions_<setup>_vs_<method>_paired.* (each rule's two conventions, paired): what
#      chooses the convention of each classic rule for the test tables (README, Results)
#   STAGES (default "search test sanity"), SETUPS (default "lenet5_mnist resnet20_cifar10 resnet56_cifar10
#   mobilenet_imagenet mobilenet_coco small_cnn_shapes"), SEARCH_SETUPS (default: SETUPS without
#   resnet56_cifar10 and mobilenet_coco), TUNE_LIMIT (300), TEST_LIMIT (1000), METHODS (comma list;
#   default: every CNN method), CONTROLS (comma list of root_opt presets; default: all five), BASELINES
#   (default "dtd_zplus lrp_gamma dtd_montavon"), BIAS_METHODS (comma list; default
#   "lrp_epsilon,lrp_gamma,dtd_montavon,lrp_alpha_beta"; empty: none), SHARED (the shared data folder:
#   weights/, mnist/, cifar10/, imagenet-samples/, coco128-seg/; default ../shared/data).
#
# Environment:
#   DATA         ImageNet-style validation folder (<DATA>/<wnid>/<image>); switches to ImageNet
#   WEIGHTS      folder with torchvision weight files under their torchvision names
#                (vgg16-397923af.pth, resnet50-0676ba61.pth, ...), or a TORCH_HOME holding
#                hub/checkpoints/; default: $TORCH_HOME as it is
#   CLASS_INDEX  imagenet_class_index.json (default: next to DATA or inside it, if present)
#   MODEL        model of the methods and root_ablation presets on ImageNet (default vgg16)
#   LIMIT        images per run (default: the dataset config's, 32). A quick mode: a LIMIT other than
#                the default, or a dataset.limit=... argument, writes to outputs/reproduce/ unless
#                RESULTS is set, so the committed results/ are never overwritten by a quick check
#   PRESETS      presets to run (default: "methods root_ablation", plus "models" on ImageNet)
#   RESULTS      output folder (default: results, or outputs/reproduce in a quick mode): runs in
#                $RESULTS/runs/<benchmark>/sweeps/<preset>/, tables in
#                $RESULTS/tables/<benchmark>_<preset>.{md,csv,tex} (+ _runs.csv), figures in
#                $RESULTS/figures/<benchmark>_*.{png,pdf} with captions (.txt)
#   REPORTS      folder of the HTML reports (default: $LEARNROOT_OUTPUT_ROOT/reports or outputs/reports, which
#                git ignores: the reports of the real stages show the shared images): one folder per stage,
#                <benchmark>_<preset>/ and real_<stage>_<setup>/, each with report.html and report_assets/
#   SKIP_RUNS=1  only aggregate the runs already there
#   BIN          folder of the learnroot-* commands (default: found on PATH, else .venv/bin)
# Arguments are passed to every learnroot-run as extra overrides (launcher, device, limits, ...).
#
# Re-running adds new sweeps beside the old ones; the tables use the newest complete run of each
# configuration (and say so). Exit status: 0 if every job succeeded (and for --help, --dry-run), 1 if
# any job failed (the tables and figures of what succeeded are still written), 2 on a usage error.
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
dry_run=
mode=
args_in=()
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        --dry-run) dry_run=1 ;;
        real) mode=real ;;
        -*) echo "reproduce_tables: unknown option $arg (try --help)" >&2; exit 2 ;;
        *) args_in+=("$arg") ;;
    esac
done
set -- ${args_in[@]+"${args_in[@]}"}

cd "$(dirname "$0")/.."
DEFAULT_LIMIT=32
quick=
[[ -n "${LIMIT:-}" && "${LIMIT}" != "$DEFAULT_LIMIT" ]] && quick="LIMIT=$LIMIT"
for arg in "$@"; do
    [[ $arg == dataset.limit=* || $arg == ++dataset.limit=* ]] && quick=$arg
done
if [[ -z "${RESULTS:-}" && -n $quick ]]; then
    RESULTS=${LEARNROOT_OUTPUT_ROOT:-outputs}/reproduce
    echo "reproduce_tables: quick mode ($quick): writing to $RESULTS/, not results/ (set RESULTS to choose)" >&2
fi
RESULTS=${RESULTS:-results}
BIN=${BIN:-$(dirname "$(command -v learnroot-run || echo .venv/bin/learnroot-run)")}
REPORTS=${REPORTS:-${LEARNROOT_OUTPUT_ROOT:-outputs}/reports}
for tool in learnroot-run learnroot-table learnroot-figures learnroot-report; do
    if [[ ! -x "$BIN/$tool" ]]; then
        echo "reproduce_tables: $tool not found (activate the venv or pip install -e .)" >&2
        exit 2
    fi
done

if [[ $mode == real ]]; then
    SHARED=${SHARED:-../shared/data}
    [[ -d $SHARED ]] || { echo "reproduce_tables: SHARED=$SHARED is not a folder (the shared real data)" >&2; exit 2; }
    shared=$(cd "$SHARED" && pwd)
    read -r -a setups <<< "${SETUPS:-lenet5_mnist resnet20_cifar10 resnet56_cifar10 mobilenet_imagenet mobilenet_coco small_cnn_shapes}"
    default_search=$(for s in "${setups[@]}"; do [[ $s != resnet56_cifar10 && $s != mobilenet_coco ]] && echo -n "$s "; done)
    read -r -a search_setups <<< "${SEARCH_SETUPS:-$default_search}"
    read -r -a stages <<< "${STAGES:-search test sanity}"
    read -r -a baselines <<< "${BASELINES:-dtd_zplus lrp_gamma dtd_montavon}"
    methods=${METHODS:-gradient,gradient_x_input,integrated_gradients,lrp_0,lrp_epsilon,lrp_gamma,dtd_zplus,dtd_zb,dtd_ww,dtd_montavon,ours}
    controls=${CONTROLS:-shuffled_control,uniform_control,mse_threshold,threshold_control,paper}
    bias_methods=${BIAS_METHODS-lrp_epsilon,lrp_gamma,dtd_montavon,lrp_alpha_beta}
    selector() {  # BASELINES word -> --paired selector and file-name part (<method>+bias: with biases)
        local name=${1%+bias}
        if [[ $1 == *+bias ]]; then echo "method=$name,method.bias=true ${name}_bias"
        elif [[ ,$bias_methods, == *,$name,* ]]; then echo "method=$name,method.bias=false $name"
        else echo "$name $name"; fi
    }
    read -r -a sanity_setups <<< "${SANITY_SETUPS:-lenet5_mnist small_cnn_shapes}"
    sanity_metrics=${SANITY_METRICS:-accuracy,attack_success,attack_iterations,attack_advantage,root_logit,root_kept,signal_kept,class_spearman,randomisation_spearman_top,randomisation_spearman_mean}
    runs=$RESULTS/runs/real; tables=$RESULTS/tables; figures=$RESULTS/figures; status=0
    stamp=$(date +%Y-%m-%d_%H-%M-%S)  # each invocation sweeps into folders of its own: re-running adds, never overwrites
    if [[ -n $dry_run ]]; then run() { printf '%q ' "$@" | sed 's/ $//'; echo; }
    else run() { "$@"; }; mkdir -p "$runs" "$tables" "$figures"; fi
    batch() {  # images per batch (small inputs go faster in larger ones) and per metric forward pass
        case $1 in lenet5_mnist|resnet*|small_cnn_shapes) echo "batch_size=32" ;;
                   *) echo "batch_size=8 metrics.pf_chunk=32" ;; esac
    }
    for stage in "${stages[@]}"; do
        case $stage in
        search)
            for setup in "${search_setups[@]}"; do
                out=$runs/$setup/search
                common=("setup=$setup" "paths.shared_data=$shared" "paths.output_root=$out" "dataset.part=tune"
                        "dataset.limit=${TUNE_LIMIT:-300}" "metrics=faithfulness" $(batch "$setup"))
                echo "== search on $setup (tuning part)" >&2
                run "$BIN/learnroot-run" -m experiment=root_search "${common[@]}" "hydra.sweep.dir=$out/grid/$stamp" "$@" || status=1
                run "$BIN/learnroot-run" -m method=ours root_opt=mse_threshold,threshold_control,paper,shuffled_control \
                    "${common[@]}" "hydra.sweep.dir=$out/references/$stamp" "$@" || status=1
                run "$BIN/learnroot-run" -m method=dtd_zplus,lrp_gamma,dtd_montavon "${common[@]}" \
                    "hydra.sweep.dir=$out/baselines/$stamp" "$@" || status=1
                run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_search_$setup" --paired dtd_zplus -q || status=1
                run "$BIN/learnroot-report" "$out" -o "$REPORTS/real_search_$setup" --paired dtd_zplus || status=1
            done ;;
        conventions)
            for setup in "${search_setups[@]}"; do
                [[ -n $bias_methods ]] || { echo "reproduce_tables: conventions: BIAS_METHODS is empty" >&2; exit 2; }
                out=$runs/$setup/conventions
                common=("setup=$setup" "paths.shared_data=$shared" "paths.output_root=$out" "dataset.part=tune"
                        "dataset.limit=${TUNE_LIMIT:-300}" "metrics=faithfulness" $(batch "$setup"))
                echo "== bias conventions on $setup (tuning part)" >&2
                run "$BIN/learnroot-run" -m "method=$bias_methods" method.bias=false,true "${common[@]}" \
                    "hydra.sweep.dir=$out/classic/$stamp" "$@" || status=1
                run "$BIN/learnroot-run" -m method=dtd_zplus "${common[@]}" "hydra.sweep.dir=$out/zplus/$stamp" "$@" || status=1
                run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_conventions_$setup" --paired dtd_zplus -q \
                    || status=1
                for method in ${bias_methods//,/ }; do
                    run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_conventions_${setup}_vs_$method" \
                        --paired "method=$method,method.bias=false" -q || status=1
                done
            done ;;
        test)
            for setup in "${setups[@]}"; do
                out=$runs/$setup/test
                common=("setup=$setup" "paths.shared_data=$shared" "paths.output_root=$out" "dataset.part=test"
                        "dataset.limit=${TEST_LIMIT:-1000}" "metrics=faithfulness" $(batch "$setup"))
                echo "== test on $setup (test part)" >&2
                run "$BIN/learnroot-run" -m "method=$methods" "${common[@]}" "hydra.sweep.dir=$out/methods/$stamp" "$@" || status=1
                if [[ -n $bias_methods ]]; then
                    run "$BIN/learnroot-run" -m "method=$bias_methods" method.bias=true \
                        "${common[@]}" "hydra.sweep.dir=$out/bias/$stamp" "$@" || status=1
                fi
                run "$BIN/learnroot-run" -m method=ours "root_opt=$controls" \
                    "${common[@]}" "hydra.sweep.dir=$out/controls/$stamp" "$@" || status=1
                run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_$setup" -q || status=1
                for baseline in "${baselines[@]}"; do
                    read -r paired name <<< "$(selector "$baseline")"
                    run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_${setup}_vs_$name" \
                        --paired "$paired" -q || status=1
                done
                run "$BIN/learnroot-figures" heatmaps "$out/methods" -o "$figures" --prefix "real_${setup}_" || status=1
                run "$BIN/learnroot-report" "$out" -o "$REPORTS/real_test_$setup" --paired "$(selector "${baselines[0]}" | cut -d' ' -f1)" || status=1
            done ;;
        sanity)
            for setup in "${sanity_setups[@]}"; do
                out=$runs/$setup/sanity
                common=("setup=$setup" "paths.shared_data=$shared" "paths.output_root=$out" "dataset.part=test"
                        "dataset.limit=${SANITY_LIMIT:-100}" $(batch "$setup"))
                echo "== sanity checks on $setup (test part)" >&2
                run "$BIN/learnroot-run" -m experiment=sanity "${common[@]}" "hydra.sweep.dir=$out/methods/$stamp" "$@" \
                    || status=1
                run "$BIN/learnroot-run" -m experiment=sanity method=ours root_opt.pixel_layer=learned "${common[@]}" \
                    "hydra.sweep.dir=$out/pixel_root/$stamp" "$@" || status=1
                # the paper's attack budget, scaled by the image area, rarely flips a small image's label: a stronger one
                run "$BIN/learnroot-run" -m experiment=sanity metrics.attack_k=5000 metrics.attack_epsilon=0.1 \
                    metrics.attack_step=0.02 "${common[@]}" "hydra.sweep.dir=$out/strong_attack/$stamp" "$@" || status=1
                run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_sanity_$setup" --metrics "$sanity_metrics" -q \
                    || status=1
                run "$BIN/learnroot-table" "$out" -o "$tables" --name "real_sanity_${setup}_vs_dtd_zplus" \
                    --metrics "$sanity_metrics" --paired dtd_zplus -q || status=1
                run "$BIN/learnroot-figures" randomisation "$out/methods" -o "$figures" --prefix "real_sanity_${setup}_" \
                    || status=1
                run "$BIN/learnroot-report" "$out" -o "$REPORTS/real_sanity_$setup" --metrics "$sanity_metrics" \
                    --paired dtd_zplus || status=1
            done ;;
        *) echo "reproduce_tables: unknown stage $stage (search, conventions, test, sanity)" >&2; exit 2 ;;
        esac
    done
    [[ -n $dry_run ]] && exit 0
    echo "reproduce_tables: real: tables in $tables/real_*, figures in $figures/real_*, reports in $REPORTS/real_*" >&2
    exit $status
fi

common=()
if [[ -n "${DATA:-}" ]]; then
    bench=imagenet
    [[ -d "$DATA" ]] || { echo "reproduce_tables: DATA=$DATA is not a folder" >&2; exit 2; }
    common+=("dataset=imagenet" "dataset.root=$(cd "$DATA" && pwd)")
    index=${CLASS_INDEX:-}
    for candidate in "$DATA/imagenet_class_index.json" "$(dirname "$DATA")/imagenet_class_index.json"; do
        [[ -z "$index" && -f "$candidate" ]] && index=$candidate
    done
    [[ -n "$index" ]] && common+=("dataset.class_index=$(cd "$(dirname "$index")" && pwd)/$(basename "$index")")
    if [[ -n "${WEIGHTS:-}" ]]; then
        [[ -d "$WEIGHTS" ]] || { echo "reproduce_tables: WEIGHTS=$WEIGHTS is not a folder" >&2; exit 2; }
        weights=$(cd "$WEIGHTS" && pwd)
        if [[ -d "$weights/hub/checkpoints" ]]; then
            export TORCH_HOME=$weights
        elif [[ -n $dry_run ]]; then
            echo "reproduce_tables: would link $RESULTS/.torch_home/hub/checkpoints -> $weights (TORCH_HOME)" >&2
        else  # a flat folder of torchvision files: expose it as a torch hub cache
            mkdir -p "$RESULTS/.torch_home/hub"
            TORCH_HOME=$(cd "$RESULTS/.torch_home" && pwd)
            export TORCH_HOME
            ln -sfn "$weights" "$TORCH_HOME/hub/checkpoints"
        fi
    fi
    model_args=("model=${MODEL:-vgg16}")
    default_presets="methods root_ablation models"
else
    bench=shapes
    model_args=()
    default_presets="methods root_ablation"
fi
[[ -n "${LIMIT:-}" ]] && common+=("dataset.limit=$LIMIT")
read -r -a presets <<< "${PRESETS:-$default_presets}"

runs=$RESULTS/runs/$bench
tables=$RESULTS/tables
figures=$RESULTS/figures
status=0
if [[ -n $dry_run ]]; then
    run() { printf '%q ' "$@" | sed 's/ $//'; echo; }
else
    run() { "$@"; }
    mkdir -p "$runs" "$tables" "$figures"
fi

for preset in "${presets[@]}"; do
    if [[ ! -f conf/experiment/$preset.yaml ]]; then
        echo "reproduce_tables: no preset conf/experiment/$preset.yaml" >&2
        exit 2
    fi
    if [[ $bench == shapes && $preset == models ]]; then
        echo "reproduce_tables: skipping 'models' (vgg16/resnet50 need ImageNet: set DATA and WEIGHTS)" >&2
        continue
    fi
    args=(${common[@]+"${common[@]}"})
    [[ $preset != models ]] && args+=(${model_args[@]+"${model_args[@]}"})
    if [[ -z "${SKIP_RUNS:-}" ]]; then
        echo "== $preset: learnroot-run -m experiment=$preset ${args[*]-} $*" >&2
        run "$BIN/learnroot-run" -m "experiment=$preset" "paths.output_root=$runs" ${args[@]+"${args[@]}"} "$@"
        code=$?
        if (( code != 0 )); then
            echo "reproduce_tables: $preset: learnroot-run exited $code" >&2
            status=1
        fi
    fi
    if [[ -n $dry_run || -d $runs/sweeps/$preset ]]; then
        run "$BIN/learnroot-table" "$runs/sweeps/$preset" -o "$tables" --name "${bench}_$preset" -q || status=1
        paired=(); [[ $preset == methods ]] && paired=(--paired dtd_zplus)
        run "$BIN/learnroot-report" "$runs/sweeps/$preset" -o "$REPORTS/${bench}_$preset" ${paired[@]+"${paired[@]}"} \
            || status=1
    else
        echo "reproduce_tables: $preset: no runs in $runs/sweeps/$preset" >&2
        status=1
    fi
done

if [[ -n $dry_run || -d $runs/sweeps/methods ]]; then
    run "$BIN/learnroot-figures" heatmaps "$runs/sweeps/methods" -o "$figures" --prefix "${bench}_methods_" || status=1
    run "$BIN/learnroot-figures" curves "$runs/sweeps/methods" -o "$figures" --prefix "${bench}_methods_" || status=1
fi
run "$BIN/learnroot-figures" toy -o "$figures" || status=1
[[ -n $dry_run ]] && exit 0

echo "reproduce_tables: tables in $tables/${bench}_*, figures in $figures/, reports in $REPORTS/${bench}_*/report.html" >&2
if (( status != 0 )); then
    echo "reproduce_tables: some jobs or steps failed (see above and the tables' failed-run lists)" >&2
fi
exit $status
