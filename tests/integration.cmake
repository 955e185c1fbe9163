# integration.cmake - engine vs float64 oracle on tiny generated checkpoints (label
# `integration`). Included from tests/CMakeLists.txt, which sets REAP_PYTHON; needs the
# reap-genmodel and reap-scorer targets. Each case runs tests/run_oracle_compare.sh:
# reap-genmodel -> reap-scorer run -> reap_oracle.py -> compare_stats.py.
#
# Coverage across the cases: split and fused expert layouts, both families,
# norm_topk_prob true and false (and false written in a qwen3_vl_moe config, which
# must still renormalise), dense layers via mlp_only_layers and via decoder_sparse_step 2,
# GQA ratios 1, 2, 3 and 4, odd sizes (H 48, I 24, vocab 257, E 12, K 3, seq_len 37),
# K == E, BF16/F16/F32, sharded and single-file checkpoints, tied embeddings, packed and
# --no-pack rows (with truncation), packed rows of both families (their rotary positions
# differ), --max-samples, and identical statistics across thread counts and micro-batch
# sizes.

if(NOT REAP_PYTHON)
  message(WARNING "reap: no python3 found; integration tests not registered")
  return()
endif()
execute_process(COMMAND ${REAP_PYTHON} -c "import numpy" RESULT_VARIABLE _reap_np_rc
                OUTPUT_QUIET ERROR_QUIET)
if(NOT _reap_np_rc EQUAL 0)
  message(WARNING "reap: ${REAP_PYTHON} has no numpy; integration tests not registered")
  return()
endif()

set(REAP_ORACLE_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/run_oracle_compare.sh)

# reap_oracle_case(NAME <script options> -- <reap-genmodel options>)
function(reap_oracle_case name)
  add_test(NAME oracle_${name}
           COMMAND bash ${REAP_ORACLE_SCRIPT} $<TARGET_FILE_DIR:reap-scorer>
                   ${CMAKE_CURRENT_BINARY_DIR}/oracle_${name} --python ${REAP_PYTHON}
                   ${ARGN})
  set_tests_properties(oracle_${name} PROPERTIES LABELS integration TIMEOUT 120)
endfunction()

# The oracle alone: analytic routing, packing, attention against a naive loop.
add_test(NAME oracle_selfcheck
         COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/selfcheck_oracle.py
                 ${CMAKE_CURRENT_BINARY_DIR}/oracle_selfcheck)
set_tests_properties(oracle_selfcheck PROPERTIES LABELS integration TIMEOUT 120)

# 1. Odd sizes, split experts, no renormalisation, GQA 4, a dense layer via
#    mlp_only_layers, BF16 in 3 shards, packed rows of 37.
reap_oracle_case(split_odd_gqa4
  --seq-len 37 --samples 10 --min-len 3 --max-len 60
  --recheck "--threads 1 --batch-size 1"
  -- --family qwen3_moe --layout split --layers 3 --hidden 48 --heads 4 --kv-heads 1
     --head-dim 12 --experts 12 --top-k 3 --moe-inter 24 --inter 40 --vocab 257
     --norm-topk 0 --mlp-only 1 --dtype bf16 --shards 3 --seed 11)

# 2. Qwen3-VL-MoE with its fused experts, GQA 1, dense layers via decoder_sparse_step 2
#    (layers 0 and 2 dense), F16, --no-pack with samples longer than a row.
reap_oracle_case(vl_fused_sparse_step
  --seq-len 29 --no-pack --samples 7 --min-len 5 --max-len 45
  -- --family qwen3_vl_moe --layers 4 --hidden 64 --heads 4 --kv-heads 4 --head-dim 16
     --experts 8 --top-k 2 --moe-inter 32 --inter 48 --vocab 300 --sparse-step 2
     --dtype f16 --shards 2 --seed 12)

# 3. Qwen3-MoE with fused experts, renormalised, GQA 4 (8/2), dense layers 0 and 2 via
#    mlp_only_layers, F32 single file, tied embeddings, --max-samples, small batches.
reap_oracle_case(fused_norm_gqa4
  --seq-len 48 --samples 12 --min-len 2 --max-len 30 --max-samples 9
  --scorer-arg --batch-size --scorer-arg 2
  -- --family qwen3_moe --layout fused --layers 4 --hidden 32 --heads 8 --kv-heads 2
     --head-dim 8 --experts 6 --top-k 2 --moe-inter 16 --inter 24 --vocab 97
     --norm-topk 1 --mlp-only 0,2 --dtype f32 --tie 1 --seed 13)

# 4. Qwen3-VL-MoE with per-expert (split) tensors and norm_topk_prob false written in its
#    config (the family renormalises anyway), GQA 3, --no-pack.
reap_oracle_case(vl_split_norm_false
  --seq-len 20 --no-pack --samples 6 --min-len 1 --max-len 26
  -- --family qwen3_vl_moe --layout split --layers 2 --hidden 36 --heads 6 --kv-heads 2
     --head-dim 10 --experts 6 --top-k 3 --moe-inter 12 --inter 20 --vocab 64
     --norm-topk 0 --dtype bf16 --seed 14)

# 5. Deeper split model, GQA 2, many experts, packed rows, more tokens.
reap_oracle_case(split_deep_packed
  --seq-len 64 --samples 16 --min-len 8 --max-len 90
  --recheck "--threads 2 --batch-size 3"
  -- --family qwen3_moe --layout split --layers 6 --hidden 40 --heads 4 --kv-heads 2
     --head-dim 10 --experts 16 --top-k 4 --moe-inter 20 --inter 32 --vocab 150
     --norm-topk 0 --dtype bf16 --shards 4 --seed 15)

# 6. Packed Qwen3-VL-MoE rows of several short samples, so packing gaps fall mid-row:
#    the family's rotary positions count valid tokens only (model/positions.h), unlike
#    qwen3_moe's slot index (cases 1, 3, 5 keep that one covered). GQA 2, BF16, fused,
#    identical statistics with one thread and one row per micro-batch.
reap_oracle_case(vl_packed_positions
  --seq-len 40 --samples 14 --min-len 2 --max-len 12
  --recheck "--threads 1 --batch-size 1"
  -- --family qwen3_vl_moe --layers 3 --hidden 48 --heads 4 --kv-heads 2 --head-dim 12
     --experts 8 --top-k 2 --moe-inter 24 --inter 32 --vocab 200 --dtype bf16 --seed 17)

# 7. K == E (every expert routed for every token; no K+1-th logit), one layer.
reap_oracle_case(k_eq_e
  --seq-len 16 --samples 5 --min-len 3 --max-len 20
  -- --family qwen3_moe --layers 1 --hidden 24 --heads 2 --kv-heads 1 --head-dim 8
     --experts 4 --top-k 4 --moe-inter 8 --vocab 50 --norm-topk 0 --seed 16)

# 8. Images (Qwen3-VL): random vision features replacing the image slots' embeddings,
#    two deepstack sets, mRoPE ids of hand-made spans in packed rows and interleaved
#    mRoPE, engine vs reap_oracle.py --images (tests/test_mrope.c, part 3).
add_test(NAME oracle_mrope_images
         COMMAND test_mrope ${CMAKE_CURRENT_BINARY_DIR}/oracle_mrope_images --oracle
                 ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle)
set_tests_properties(oracle_mrope_images PROPERTIES LABELS integration TIMEOUT 120)

# 9. Image calibration end to end (tests/run_vision_e2e.sh): reap-genmodel --vision,
#    generated PNGs of awkward sizes (RGB, grayscale, RGBA) and an image calibration
#    file, reap-scorer run on the CPU (the real vision tower, the real image decoding and
#    preprocessing), the float64 vision tower on the dumped patches, reap_oracle.py on
#    the dumped rows; the Qwen3 tokenizer fixture renders the items.
#    packed: image + text packing (a sample starting a new row), two images in one
#    sample, text-only items between image items, the model's preprocessor limits, the
#    tower in batches of <= 200 patches (4 calls for 5 images).
#    nopack: one row per sample, --min-pixels/--max-pixels overrides, one deepstack set,
#    F32 weights, a dense layer (sparse step 2).
#    packed_patch2_nodeep: patch 2 (factor 4), no deepstack, a 6 x 6 position table,
#    F16 in 2 shards, GQA 5, --max-pixels only.
#    genmodel_png_jpeg: the images and calibration file of reap-genmodel --images (7
#    images: PNG RGB/RGBA, JPEG RGB/gray).
foreach(vcase
    "packed|--case packed --seq-len 192 --vision-batch 200|--layers 3 --hidden 32 --heads 4 --kv-heads 2 --head-dim 8 --experts 6 --top-k 2 --moe-inter 16 --inter 24 --vocab 151936 --tie 1 --seed 31"
    "nopack_limits|--case nopack --seq-len 160 --no-pack --min-pixels 2048 --max-pixels 4096|--layers 4 --hidden 48 --heads 4 --kv-heads 4 --head-dim 12 --experts 8 --top-k 3 --moe-inter 24 --inter 32 --vocab 151936 --sparse-step 2 --dtype f32 --vis-hidden 48 --vis-heads 4 --vis-depth 2 --vis-deepstack 1 --seed 32"
    "packed_patch2_nodeep|--case packed --seq-len 512 --max-pixels 3000|--layers 2 --hidden 40 --heads 5 --kv-heads 1 --head-dim 8 --experts 5 --top-k 2 --moe-inter 12 --vocab 151936 --dtype f16 --shards 2 --vis-patch 2 --vis-deepstack none --vis-pos-side 6 --seed 33"
    "genmodel_png_jpeg|--genmodel-images 7 --seq-len 256|--layers 2 --hidden 32 --heads 4 --kv-heads 2 --head-dim 8 --experts 6 --top-k 2 --moe-inter 16 --vocab 151936 --tie 1 --seed 34")
  string(REPLACE "|" ";" parts "${vcase}")
  list(GET parts 0 vname)
  list(GET parts 1 vopts)
  list(GET parts 2 vgen)
  separate_arguments(vopts)
  separate_arguments(vgen)
  add_test(NAME oracle_vision_e2e_${vname}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run_vision_e2e.sh
                   $<TARGET_FILE_DIR:reap-scorer> ${CMAKE_CURRENT_BINARY_DIR}/oracle_vision_e2e_${vname}
                   ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen3-tokenizer
                   ${vopts} -- ${vgen})
  set_tests_properties(oracle_vision_e2e_${vname} PROPERTIES LABELS integration TIMEOUT 300)
endforeach()
