# The libFuzzer harnesses of tests/fuzz in the test suite (label fuzz). fuzz_build
# configures and builds them with clang in <build>/fuzz-build (scripts/fuzz.sh
# --build-only); then each harness runs for REAP_FUZZ_SECONDS from its seed corpus,
# failing on any crash, sanitizer report, leak or timeout (reproducers under
# <build>/fuzz-findings/<name>/). Without clang and libFuzzer every test reports Skipped
# with the reason. Long runs: scripts/fuzz.sh, docs/fuzzing.md.
set(REAP_FUZZ_SECONDS 15 CACHE STRING "Seconds each libFuzzer harness runs in the test suite")
set(REAP_FUZZ_NAMES safetensors config tokenizer calib store_import minisign manifest image)
set(reap_fuzz_sh ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh)
add_test(NAME fuzz_build COMMAND bash ${reap_fuzz_sh} --build-only
         --build-dir ${CMAKE_BINARY_DIR}/fuzz-build)
set_tests_properties(fuzz_build PROPERTIES LABELS fuzz TIMEOUT 1200 SKIP_RETURN_CODE 77
                     FIXTURES_SETUP reap_fuzz)
foreach(name ${REAP_FUZZ_NAMES})
  add_test(NAME fuzz_${name} COMMAND bash ${reap_fuzz_sh} --no-build
           --build-dir ${CMAKE_BINARY_DIR}/fuzz-build --out ${CMAKE_BINARY_DIR}/fuzz-findings
           ${REAP_FUZZ_SECONDS} ${name})
  set_tests_properties(fuzz_${name} PROPERTIES LABELS fuzz TIMEOUT 300 SKIP_RETURN_CODE 77
                       FIXTURES_REQUIRED reap_fuzz)
endforeach()
