# awq.cmake - AWQ int4 checkpoints end to end (included from tests/CMakeLists.txt, which
# sets REAP_PYTHON; test_awq itself is a unit test of the test_*.c glob):
#   awq_cli     generator -> numpy packer checks -> scorer vs dequantised twin and the
#               float64 oracle -> pruner with --verify -> refusals (integration)
#   awq_target  the 235B widths with 2 layers, scored and pruned at 0.40 (integration, slow)
if(NOT REAP_PYTHON OR NOT TARGET reap-pruner OR NOT TARGET test_awq)
  message(WARNING "reap: AWQ integration tests need python3, reap-pruner and test_awq")
  return()
endif()
execute_process(COMMAND ${REAP_PYTHON} -c "import numpy" RESULT_VARIABLE _reap_awq_np
                OUTPUT_QUIET ERROR_QUIET)
if(NOT _reap_awq_np EQUAL 0)
  message(WARNING "reap: ${REAP_PYTHON} has no numpy; AWQ integration tests not registered")
  return()
endif()
add_test(NAME awq_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/awq_cli.sh $<TARGET_FILE_DIR:reap-scorer>
                 $<TARGET_FILE:test_awq> ${CMAKE_CURRENT_BINARY_DIR}/awq_cli ${REAP_PYTHON})
set_tests_properties(awq_cli PROPERTIES LABELS integration TIMEOUT 300)
add_test(NAME awq_target
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/awq_target.sh $<TARGET_FILE_DIR:reap-scorer>
                 ${CMAKE_CURRENT_BINARY_DIR}/awq_target ${REAP_PYTHON})
set_tests_properties(awq_target PROPERTIES LABELS "integration;slow" TIMEOUT 1200
                     SKIP_RETURN_CODE 77)
