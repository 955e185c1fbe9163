# rpc.cmake - tests of the rpc/ transport (included from tests/CMakeLists.txt when the
# reap_rpc library exists): the rpc-testd test server (demo service of rpc_test.proto),
# the Python integration test against it and the load test (labels integration, slow).
# The Python client uses Debian's python3-grpcio; stubs are generated at test time into
# the test's work directory by protoc + grpc_python_plugin.
if(NOT TARGET reap_rpc)
  return()
endif()

set(RPC_TEST_PROTO ${CMAKE_CURRENT_SOURCE_DIR}/rpc_test.proto)
set(RPC_TEST_PB_C ${CMAKE_CURRENT_BINARY_DIR}/rpc_test.pb-c.c)
add_custom_command(
  OUTPUT ${RPC_TEST_PB_C} ${CMAKE_CURRENT_BINARY_DIR}/rpc_test.pb-c.h
  COMMAND ${PROTOC_C} --c_out=${CMAKE_CURRENT_BINARY_DIR} -I${CMAKE_CURRENT_SOURCE_DIR}
          ${RPC_TEST_PROTO}
  DEPENDS ${RPC_TEST_PROTO}
  COMMENT "protoc-c rpc_test.proto"
  VERBATIM)
set_source_files_properties(${RPC_TEST_PB_C} PROPERTIES COMPILE_OPTIONS -w)
add_executable(rpc-testd rpc_testd.c ${RPC_TEST_PB_C})
target_include_directories(rpc-testd PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
target_link_libraries(rpc-testd PRIVATE reap_rpc)
set_target_properties(rpc-testd PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

find_program(REAP_PROTOC protoc)
find_program(REAP_GRPC_PYTHON_PLUGIN grpc_python_plugin)
set(_rpc_py_ok 0)
if(REAP_PYTHON AND REAP_PROTOC AND REAP_GRPC_PYTHON_PLUGIN)
  execute_process(COMMAND ${REAP_PYTHON} -c "import grpc, google.protobuf"
                  RESULT_VARIABLE _rpc_grpc_rc OUTPUT_QUIET ERROR_QUIET)
  if(_rpc_grpc_rc EQUAL 0)
    set(_rpc_py_ok 1)
  endif()
endif()
if(NOT _rpc_py_ok)
  message(WARNING "reap: python3-grpcio, protoc or grpc_python_plugin missing; "
                  "rpc integration tests not registered (scripts/install-deps.sh)")
  return()
endif()

set(RPC_PY_ARGS --testd $<TARGET_FILE:rpc-testd> --proto-dir ${CMAKE_SOURCE_DIR}/proto
    --test-proto-dir ${CMAKE_CURRENT_SOURCE_DIR} --protoc ${REAP_PROTOC}
    --plugin ${REAP_GRPC_PYTHON_PLUGIN})
add_test(NAME rpc_integration
         COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/rpc_integration.py ${RPC_PY_ARGS}
                 --work ${CMAKE_CURRENT_BINARY_DIR}/rpc_integration)
set_tests_properties(rpc_integration PROPERTIES LABELS integration TIMEOUT 300)
add_test(NAME rpc_load
         COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/rpc_integration.py ${RPC_PY_ARGS}
                 --work ${CMAKE_CURRENT_BINARY_DIR}/rpc_load --load)
set_tests_properties(rpc_load PROPERTIES LABELS "integration;slow" TIMEOUT 600)
