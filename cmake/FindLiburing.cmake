# FindLiburing.cmake — find liburing (io_uring userspace library).
#
# Tries pkg-config's `liburing` first, then plain find_path/find_library (Liburing_ROOT,
# CMAKE_PREFIX_PATH and the system paths), so it works where pkg-config is absent.
#
# Result variables:
#   Liburing_FOUND, Liburing_VERSION, Liburing_INCLUDE_DIRS, Liburing_LIBRARIES
# Imported target:
#   Liburing::Liburing
# Cache variables (may be set by hand):
#   Liburing_INCLUDE_DIR, Liburing_LIBRARY

find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_Liburing QUIET liburing)
endif()

find_path(Liburing_INCLUDE_DIR
  NAMES liburing.h
  HINTS ${PC_Liburing_INCLUDEDIR} ${PC_Liburing_INCLUDE_DIRS})
find_library(Liburing_LIBRARY
  NAMES uring liburing
  HINTS ${PC_Liburing_LIBDIR} ${PC_Liburing_LIBRARY_DIRS})

if(PC_Liburing_VERSION)
  set(Liburing_VERSION "${PC_Liburing_VERSION}")
elseif(Liburing_INCLUDE_DIR AND EXISTS "${Liburing_INCLUDE_DIR}/liburing/io_uring_version.h")
  file(STRINGS "${Liburing_INCLUDE_DIR}/liburing/io_uring_version.h" _liburing_ver
       REGEX "^#define IO_URING_VERSION_(MAJOR|MINOR)")
  string(REGEX REPLACE ".*MAJOR[ \t]+([0-9]+).*" "\\1" _liburing_major "${_liburing_ver}")
  string(REGEX REPLACE ".*MINOR[ \t]+([0-9]+).*" "\\1" _liburing_minor "${_liburing_ver}")
  set(Liburing_VERSION "${_liburing_major}.${_liburing_minor}")
  unset(_liburing_ver)
  unset(_liburing_major)
  unset(_liburing_minor)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Liburing
  REQUIRED_VARS Liburing_LIBRARY Liburing_INCLUDE_DIR
  VERSION_VAR Liburing_VERSION)

if(Liburing_FOUND)
  set(Liburing_INCLUDE_DIRS "${Liburing_INCLUDE_DIR}")
  set(Liburing_LIBRARIES "${Liburing_LIBRARY}")
  if(NOT TARGET Liburing::Liburing)
    add_library(Liburing::Liburing UNKNOWN IMPORTED)
    set_target_properties(Liburing::Liburing PROPERTIES
      IMPORTED_LOCATION "${Liburing_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${Liburing_INCLUDE_DIR}")
  endif()
endif()

mark_as_advanced(Liburing_INCLUDE_DIR Liburing_LIBRARY)
