# vcpkg port for strata (header-only). Used as an overlay port straight from this repository:
#
#   vcpkg install strata[uring,mpi] --overlay-ports=<strata>/packaging/vcpkg
#
# The sources are the repository this file sits in. For a registry, replace the SOURCE_PATH
# line with vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/strata
# REF "v${VERSION}" SHA512 <hash> HEAD_REF main).
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

set(VCPKG_BUILD_TYPE release)   # header-only: no debug variant to build

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    cuda  STRATA_ENABLE_CUDA
    uring STRATA_ENABLE_URING
    mpi   STRATA_ENABLE_MPI
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DSTRATA_ENABLE_NCCL=OFF
    -DSTRATA_BUILD_TESTS=OFF
    -DSTRATA_BUILD_BENCHMARKS=OFF
    -DSTRATA_BUILD_EXAMPLES=OFF
)
vcpkg_cmake_install()

# strataConfig.cmake (with FindLiburing/FindNCCL and the per-component target files) is
# installed to share/cmake/strata; vcpkg wants it in share/strata.
vcpkg_cmake_config_fixup(PACKAGE_NAME strata CONFIG_PATH share/cmake/strata)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
if(EXISTS "${SOURCE_PATH}/LICENSE")
  vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
else()
  vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/README.md")
endif()
