# strataCudaStd.cmake — teach CMake < 3.26 that nvcc >= 12 speaks C++20.
#
# CMake 3.25 (Debian 12) knows cuda_std_20 as a feature name but has no compile option for it
# with NVIDIA's compiler: CMAKE_CUDA_STANDARD 20 then silently falls back to nvcc's default
# (C++17 for CUDA 12/13) and `cuda_std_20` makes generation fail. strata's headers need C++20
# in .cu files too, so after enable_language(CUDA) this fills in what newer CMake has built in.
# Harmless (does nothing) on CMake versions that already know the option.
# Include it in every directory scope that enabled CUDA before targets are created there;
# strataConfig.cmake does it for consumers that enabled CUDA before find_package(strata).

if(CMAKE_CUDA_COMPILER_LOADED
   AND CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA"
   AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0
   AND NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  if(NOT "cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
  endif()
endif()
