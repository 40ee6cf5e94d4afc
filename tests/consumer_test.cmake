# ctest driver for the install/consumer test (run with cmake -P):
#   installs the qround build tree to a fresh prefix, then configures, builds and runs the
#   project in tests/consumer against that prefix via find_package(qround).
# Inputs (-D): QROUND_BUILD_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, GENERATOR, CXX_COMPILER,
#              BUILD_TYPE, PREFIX_PATH (where the dependencies were found), EXTRA_FLAGS.
foreach(var QROUND_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "consumer_test.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${name} failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "consumer test: ${name} ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" ${CMAKE_COMMAND} --install "${QROUND_BUILD_DIR}" --prefix "${prefix}"
         --config "${BUILD_TYPE}")
if(NOT EXISTS "${prefix}/include/qround/nearest.hpp")
  message(FATAL_ERROR "consumer test: the install tree has no include/qround/nearest.hpp")
endif()

set(flag_args)
if(EXTRA_FLAGS)
  list(APPEND flag_args "-DCMAKE_CXX_FLAGS=${EXTRA_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${EXTRA_FLAGS}")
endif()
# The install prefix first, so the consumer cannot pick up qround from the build tree or elsewhere.
run_step("configure" ${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/build"
         -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
         "-DCMAKE_PREFIX_PATH=${prefix};${PREFIX_PATH}" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
         ${flag_args})
run_step("build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build" --config "${BUILD_TYPE}")

set(exe "${WORK_DIR}/build/consumer")
if(NOT EXISTS "${exe}")
  set(exe "${WORK_DIR}/build/${BUILD_TYPE}/consumer")
endif()
run_step("run" "${exe}")
message(STATUS "consumer output: ${step_output}")
