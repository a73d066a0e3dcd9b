# run_consumer.cmake — drive one consumer test at ctest time (cmake -P).
#
#   -DMODE=install                 install this build tree into PREFIX; check strata.pc works
#   -DMODE=find_package            consumer of PREFIX, -DCOMPONENTS=a,b and -DEXPECT_CUDA=0|1
#   -DMODE=find_package_missing    a required unknown component must make configure fail
#   -DMODE=add_subdirectory        consumer that add_subdirectory()s SOURCE_DIR (-DURING=ON|OFF)
#   -DMODE=single_include          plain compiler call with only single_include/ on the path
# Also: GENERATOR, MAKE_PROGRAM, CXX_COMPILER, SOURCE_DIR, BUILD_DIR, WORK_DIR, PREFIX.
cmake_minimum_required(VERSION 3.25)

set(CONSUMER_DIR "${SOURCE_DIR}/tests/consumer")

# run(<what> <command...>): run it, echo its output, stop with an error when it fails.
function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("---- ${what}: ${ARGN}\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

function(configure_and_build name project_dir)
  set(dir "${WORK_DIR}/${name}")
  file(REMOVE_RECURSE "${dir}")
  run("configure ${name}" "${CMAKE_COMMAND}" -S "${project_dir}" -B "${dir}"
      -G "${GENERATOR}" "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=Release ${ARGN})
  run("build ${name}" "${CMAKE_COMMAND}" --build "${dir}")
  run("run ${name}" "${dir}/consumer")
  set(run_output "${run_output}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  run("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" --component strata)
  foreach(f share/cmake/strata/strataConfig.cmake share/cmake/strata/strataConfigVersion.cmake
            share/cmake/strata/strataTargets.cmake share/cmake/strata/FindLiburing.cmake
            share/pkgconfig/strata.pc include/strata/strata.hpp include/strata/core/config.hpp)
    if(NOT EXISTS "${PREFIX}/${f}")
      message(FATAL_ERROR "install is missing ${f}")
    endif()
  endforeach()
  # strata.pc finds its prefix from its own location: compile with its flags.
  find_program(PKG_CONFIG_EXECUTABLE pkg-config)
  if(PKG_CONFIG_EXECUTABLE)
    set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")
    run("pkg-config" "${PKG_CONFIG_EXECUTABLE}" --cflags --libs strata)
    string(STRIP "${run_output}" flags)
    separate_arguments(flags UNIX_COMMAND "${flags}")
    file(MAKE_DIRECTORY "${WORK_DIR}/pkg_config")
    run("compile with pkg-config flags" "${CXX_COMPILER}" -std=c++20 ${flags}
        "${CONSUMER_DIR}/main.cpp" -o "${WORK_DIR}/pkg_config/consumer")
    run("run pkg-config consumer" "${WORK_DIR}/pkg_config/consumer")
  endif()

elseif(MODE STREQUAL "find_package")
  string(REPLACE "," ";" components "${COMPONENTS}")
  set(name find_package)
  if(components)
    string(REPLACE "," "_" suffix "${COMPONENTS}")
    set(name "find_package_${suffix}")
  endif()
  configure_and_build(${name} "${CONSUMER_DIR}/find_package"
    "-DCMAKE_PREFIX_PATH=${PREFIX}" "-DSTRATA_CONSUMER_COMPONENTS=${components}"
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
  if(NOT run_output MATCHES "cuda_enabled=${EXPECT_CUDA}")
    message(FATAL_ERROR "expected cuda_enabled=${EXPECT_CUDA} from the consumer")
  endif()

elseif(MODE STREQUAL "find_package_missing")
  set(dir "${WORK_DIR}/find_package_missing")
  file(REMOVE_RECURSE "${dir}")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}/find_package" -B "${dir}"
            -G "${GENERATOR}" "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}"
            "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${PREFIX}"
            -DSTRATA_CONSUMER_COMPONENTS=no_such_component
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(rc EQUAL 0)
    message(FATAL_ERROR "configure succeeded although a required component is missing")
  endif()
  string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}")   # CMake wraps long messages
  if(NOT flat MATCHES "lacks required component\\(s\\): no_such_component \\(unknown component")
    message(FATAL_ERROR "configure failed, but without strata's message about the component")
  endif()

elseif(MODE STREQUAL "add_subdirectory")
  # CUDA and MPI off: they are covered by the main build; this checks the embedding itself.
  configure_and_build(add_subdirectory "${CONSUMER_DIR}/add_subdirectory"
    "-DSTRATA_SOURCE_DIR=${SOURCE_DIR}" -DSTRATA_ENABLE_CUDA=OFF -DSTRATA_ENABLE_MPI=OFF
    "-DSTRATA_ENABLE_URING=${URING}")

elseif(MODE STREQUAL "single_include")
  # Only single_include/ on the include path: the header must be self-contained.
  set(dir "${WORK_DIR}/single_include")
  file(REMOVE_RECURSE "${dir}")
  file(MAKE_DIRECTORY "${dir}")
  run("compile" "${CXX_COMPILER}" -std=c++20 "-I${SOURCE_DIR}/single_include"
      "${CONSUMER_DIR}/main.cpp" -o "${dir}/consumer" -pthread)
  run("run" "${dir}/consumer")
  if(NOT run_output MATCHES "cuda_enabled=0")
    message(FATAL_ERROR "expected cuda_enabled=0 from the single-header consumer")
  endif()

else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()
