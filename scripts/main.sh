#!/usr/bin/env bash
# The main job: set up .venv, then fit a neural spline flow to the two-moons toy (whose true
# density is known, so the KL gap is reported) and a class-conditional Glow to the bundled 8x8
# digits kept as 1x8x8 images (bits/dim; samples per class and at two temperatures,
# reconstructions), then put bounds next to exact likelihoods on the same digits: a masked
# autoregressive flow and a neural spline flow (exact log p(x)) and two VAEs, one with a
# diagonal Gaussian posterior and one with an IAF posterior (ELBO and an importance-sampling
# estimate of log p(x)), charted together in runs/contrast.png. Metrics,
# checkpoints and pictures go under runs/.
# Safe to run again: each fit replaces its run folder (--overwrite), once the new run is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh ode  # FFJORD solves its ODE with torchdiffeq
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
ef=.venv/bin/exactflow
progress=()
[ -t 1 ] || progress=(--no-progress)

$ef fit --data moons --flow nsf --transforms 4 --hidden 64,64 --bins 8 \
    --epochs 12 --lr 2e-3 --checkpoint-every 100 --out runs/moons --overwrite "${progress[@]}"
$ef fit --data moons --flow ffjord --hidden 64,64 --kinetic 0.01 --jacobian-norm 0.01 \
    --epochs 6 --lr 5e-3 --out runs/moons-ffjord --overwrite "${progress[@]}"
$ef fit --data digits --flow maf --transforms 5 --hidden 128,128 \
    --epochs 300 --lr 1e-3 --patience 15 --out runs/digits --overwrite "${progress[@]}"
$ef sample runs/digits -n 64 -o runs/digits/figures/sample-grid.png
$ef fit --data digits --flow nsf --transforms 5 --hidden 128,128 --bins 8 \
    --epochs 300 --lr 1e-3 --patience 15 --out runs/digits-nsf --overwrite "${progress[@]}"
$ef fit --data digits --flow glow --levels 2 --transforms 4 --hidden 32 --conditional \
    --epochs 40 --lr 3e-3 --out runs/digits-glow --overwrite "${progress[@]}"
for posterior in gaussian iaf; do
    $ef fit --model vae --data digits --posterior "$posterior" --latent 16 --hidden 256,256 \
        --batch-size 128 --epochs 400 --lr 1e-3 --patience 30 \
        --out "runs/digits-vae-$posterior" --overwrite "${progress[@]}"
done

echo
echo "summary (test split):"
$ef eval runs/moons
$ef eval runs/moons-ffjord
$ef eval runs/digits
$ef eval runs/digits-glow
echo
echo "bounds next to exact likelihoods (8x8 digits, test split, nats per image):"
$ef compare runs/digits runs/digits-nsf runs/digits-vae-gaussian runs/digits-vae-iaf \
    -o runs/contrast.png
echo "pictures: runs/contrast.png runs/*/figures/*.png"
