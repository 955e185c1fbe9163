# services.cmake - tests of the two services (included from tests/CMakeLists.txt): the real
# reap-scorer serve / reap-pruner serve on 127.0.0.1 port 0 over a temporary store.
#   services_reapctl      driven by reapctl only (score, watch and re-attach, Ctrl-C and
#                         cancel, runs, models, stats --json/--svg, keepset, prune, verify,
#                         exit codes, SIGTERM)                          label integration
#   services_integration  a Python gRPC client (Debian python3-grpcio, stubs generated
#                         from proto/ at test time): every RPC and health, re-attach,
#                         cancel and resume, the run queue, > 20 kinds of bad request,
#                         TLS, SIGTERM mid-run and resume                label integration
#   services_images       image calibration through the service: images and image tokens
#                         in score's header, img_tok in stats, an image outside the
#                         calibration root refused                      label integration
#   services_load         100 clients x 100 RPCs while a run streams   labels integration, slow
if(NOT TARGET reap-scorer OR NOT TARGET reap-pruner OR NOT TARGET reapctl OR NOT REAP_PYTHON)
  return()
endif()

add_test(NAME services_reapctl
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/services_reapctl.sh
                 $<TARGET_FILE_DIR:reap-scorer> ${CMAKE_CURRENT_BINARY_DIR}/services_reapctl
                 ${REAP_PYTHON})
set_tests_properties(services_reapctl PROPERTIES LABELS integration TIMEOUT 180)

# image calibration through the scorer service (tests/services_images.sh): the images
# and image tokens in reapctl score's header, img_tok in reapctl stats, an image outside
# --calib-root refused
add_test(NAME services_images
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/services_images.sh
                 $<TARGET_FILE_DIR:reap-scorer> ${CMAKE_CURRENT_BINARY_DIR}/services_images
                 ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen3-tokenizer
                 ${CMAKE_CURRENT_SOURCE_DIR}/oracle)
set_tests_properties(services_images PROPERTIES LABELS integration TIMEOUT 180)

find_program(REAP_SVC_PROTOC protoc)
find_program(REAP_SVC_GRPC_PLUGIN grpc_python_plugin)
set(_svc_py_ok 0)
if(REAP_SVC_PROTOC AND REAP_SVC_GRPC_PLUGIN)
  execute_process(COMMAND ${REAP_PYTHON} -c "import grpc, google.protobuf"
                  RESULT_VARIABLE _svc_grpc_rc OUTPUT_QUIET ERROR_QUIET)
  if(_svc_grpc_rc EQUAL 0)
    set(_svc_py_ok 1)
  endif()
endif()
if(NOT _svc_py_ok)
  message(WARNING "reap: python3-grpcio, protoc or grpc_python_plugin missing; "
                  "services Python tests not registered (scripts/install-deps.sh)")
  return()
endif()

set(SVC_PY_ARGS --bin $<TARGET_FILE_DIR:reap-scorer> --proto-dir ${CMAKE_SOURCE_DIR}/proto
    --protoc ${REAP_SVC_PROTOC} --plugin ${REAP_SVC_GRPC_PLUGIN})
add_test(NAME services_integration
         COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/services_integration.py
                 ${SVC_PY_ARGS} --work ${CMAKE_CURRENT_BINARY_DIR}/services_integration)
set_tests_properties(services_integration PROPERTIES LABELS integration TIMEOUT 300)
add_test(NAME services_load
         COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/services_integration.py
                 ${SVC_PY_ARGS} --work ${CMAKE_CURRENT_BINARY_DIR}/services_load --load)
set_tests_properties(services_load PROPERTIES LABELS "integration;slow" TIMEOUT 900)
