# tests/packaging/conan_create.cmake — the Conan recipe works for a new user, offline (cmake -P).
#
#   -DSOURCE_DIR=<repo> -DWORK_DIR=<dir in the build tree> [-DCONAN=<conan>]
#
# With a fresh CONAN_HOME in WORK_DIR: `conan profile detect` (the default profile a new user
# gets: gnu17 with GCC 12), then `conan create packaging/conan --no-remote`, whose test_package
# (copied to WORK_DIR, so nothing is written into the source tree) builds a consumer and runs it;
# the consumer's line must be in the output. Without conan (PATH, or the .cache/conan-venv that
# `scripts/setup --with-conan` makes) it prints "SKIP: conan not installed" (the test's
# SKIP_REGULAR_EXPRESSION).
cmake_minimum_required(VERSION 3.25)

if(NOT CONAN)
  find_program(CONAN NAMES conan HINTS "${SOURCE_DIR}/.cache/conan-venv/bin" NO_CACHE)
endif()
if(NOT CONAN)
  message("SKIP: conan not installed (scripts/setup --with-conan installs it from PyPI)")
  return()
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(COPY "${SOURCE_DIR}/packaging/conan/test_package" DESTINATION "${WORK_DIR}")
set(ENV{CONAN_HOME} "${WORK_DIR}/home")

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("---- ${what}: ${ARGN}\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

run("conan version" "${CONAN}" --version)
run("profile" "${CONAN}" profile detect --force)
run("create" "${CONAN}" create "${SOURCE_DIR}/packaging/conan" --no-remote --build=missing
    --test-folder "${WORK_DIR}/test_package")
if(NOT run_output MATCHES "strata [0-9.]+ from Conan: 10000 floats host -> device -> host, doubled on the device")
  message(FATAL_ERROR "conan create ran, but the test_package consumer's line is not in its output")
endif()
message("conan create: the package builds and its consumer runs")
