# Deployment files (deploy/): tests/deploy_check.py renders every kustomize overlay with
# the real kustomize (the PyPI wheel pykustomize) and validates every object strictly
# against the Kubernetes schemas (kubernetes-validate), runs yamllint, and checks the
# Dockerfiles, compose file and .env.example against the repository and the binaries'
# --help (its tools go into a venv under the build tree; without PyPI it exits 77:
# Skipped). tests/deploy_scaleout.sh runs the scale-out's Indexed-Job scripts on one
# machine: 3 shards scored, exported, merged, equal to one pass.
if(TARGET reap-scorer AND TARGET reap-pruner AND TARGET reapctl)
  add_test(NAME deploy_manifests
           COMMAND ${REAP_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/deploy_check.py
                   --repo ${CMAKE_SOURCE_DIR} --bin $<TARGET_FILE_DIR:reap-scorer>
                   --work ${CMAKE_CURRENT_BINARY_DIR}/deploy_check)
  set_tests_properties(deploy_manifests PROPERTIES LABELS integration TIMEOUT 600
                       SKIP_RETURN_CODE 77)
  add_test(NAME deploy_scaleout
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/deploy_scaleout.sh
                   $<TARGET_FILE_DIR:reap-scorer> ${CMAKE_CURRENT_BINARY_DIR}/deploy_scaleout
                   ${REAP_PYTHON} ${CMAKE_SOURCE_DIR})
  set_tests_properties(deploy_scaleout PROPERTIES LABELS integration TIMEOUT 180)
endif()
