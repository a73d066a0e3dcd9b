"""Conan 2 recipe for strata (header-only).

    conan profile detect                                         # once, if you have no profile
    conan create packaging/conan --build=missing                 # from the repository root
    conan create packaging/conan -o "strata/*:with_uring=True" -o "strata/*:with_mpi=True"

Consumers get the same CMake names as an installed strata: find_package(strata) and the
targets strata::strata, strata::uring, strata::mpi, strata::cuda (CMakeDeps generates them from
package_info below). CUDA itself is not on ConanCenter: with_cuda expects the system's CUDA
toolkit (CUDA::cudart through find_package(CUDAToolkit) in the consumer, or cudart on the
library path). The recipe never downloads strata's sources: they are exported from this tree.
test_package/ builds and runs a small consumer (conan create does it).

C++20: strata's headers need it. The profile `conan profile detect` writes says gnu17 with
GCC 12, and that is fine: like the installed strataConfig.cmake, the CMake targets of this
package ask for the compile feature cxx_std_20 (a CMake build module, see package_info), so
whatever links strata::strata is compiled as C++20 — the profile's standard stays the default
for the rest. Other build systems (PkgConfigDeps, ...) need -s compiler.cppstd=20 (or gnu20)
or their own -std=c++20; a profile that says so is checked to be at least 20.
"""

import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy, save
from conan.tools.layout import basic_layout

_CXX20_MODULE = """\
# strata-cxx20.cmake (from the Conan recipe): strata's headers need C++20, as the installed
# strataConfig.cmake says with target_compile_features; CMakeDeps targets carry no compile
# features, so this build module adds it.
foreach(_strata_target IN ITEMS strata::strata strata_strata_core strata::core)
  if(TARGET ${_strata_target})
    get_target_property(_strata_aliased ${_strata_target} ALIASED_TARGET)
    if(NOT _strata_aliased)
      set_property(TARGET ${_strata_target} APPEND PROPERTY INTERFACE_COMPILE_FEATURES cxx_std_20)
    endif()
  endif()
endforeach()
unset(_strata_target)
unset(_strata_aliased)
"""

required_conan_version = ">=2.0"


class StrataConan(ConanFile):
    name = "strata"
    version = "0.1.0"
    description = ("Tiered tensors (GPU, pinned, host, NVMe) with background offload, "
                   "header-only C++20/CUDA")
    topics = ("cuda", "offload", "zero", "tensor", "io_uring", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "with_cuda": [True, False],
        "with_uring": [True, False],
        "with_mpi": [True, False],
    }
    default_options = {
        "with_cuda": False,
        "with_uring": False,
        "with_mpi": False,
    }
    no_copy_source = True

    @property
    def _root(self):
        # The recipe lives in packaging/conan/; the sources are the repository around it.
        return os.path.abspath(os.path.join(self.recipe_folder, "..", ".."))

    def export_sources(self):
        copy(self, "*.hpp", os.path.join(self._root, "include"),
             os.path.join(self.export_sources_folder, "include"))
        copy(self, "*.cuh", os.path.join(self._root, "include"),
             os.path.join(self.export_sources_folder, "include"))
        copy(self, "*.inl", os.path.join(self._root, "include"),
             os.path.join(self.export_sources_folder, "include"))
        copy(self, "*", os.path.join(self._root, "cmake"),
             os.path.join(self.export_sources_folder, "cmake"))
        for name in ("LICENSE", "README.md", "CMakeLists.txt"):
            if os.path.isfile(os.path.join(self._root, name)):
                copy(self, name, self._root, self.export_sources_folder)

    def config_options(self):
        if self.settings.os != "Linux":
            del self.options.with_uring

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        if self.options.get_safe("with_uring"):
            self.requires("liburing/2.4")
        if self.options.with_mpi:
            self.requires("openmpi/4.1.6")

    def validate(self):
        # Header-only: the consumer compiles strata, as C++20 through the CMake targets (see
        # the top of this file), so a profile's default standard below 20 is no reason to
        # refuse the package. A compiler that cannot do C++20 at all is.
        compiler = str(self.settings.get_safe("compiler") or "")
        version = str(self.settings.get_safe("compiler.version") or "0")
        minimum = {"gcc": 10, "clang": 13, "apple-clang": 14, "msvc": 193}.get(compiler)
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        if minimum is not None and major < minimum:
            raise ConanInvalidConfiguration(
                f"strata needs a C++20 compiler: {compiler} >= {minimum} (this profile says "
                f"{compiler} {version})")

    def package_id(self):
        # Header-only: one package whatever the settings; options only change package_info.
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        for pattern in ("*.hpp", "*.cuh", "*.inl"):
            copy(self, pattern, os.path.join(self.source_folder, "include"),
                 os.path.join(self.package_folder, "include"))
        save(self, os.path.join(self.package_folder, "lib", "cmake", "strata-cxx20.cmake"),
             _CXX20_MODULE)

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "strata")
        self.cpp_info.set_property("cmake_target_name", "strata::strata")
        self.cpp_info.set_property("pkg_config_name", "strata")
        self.cpp_info.set_property("cmake_build_modules", [os.path.join("lib", "cmake", "strata-cxx20.cmake")])
        self.cpp_info.builddirs = [os.path.join("lib", "cmake")]

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "strata::strata")
        core.set_property("pkg_config_name", "strata")
        core.bindirs = []
        core.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]

        if self.options.get_safe("with_uring"):
            uring = self.cpp_info.components["uring"]
            uring.set_property("cmake_target_name", "strata::uring")
            uring.requires = ["core", "liburing::liburing"]
            uring.defines = ["STRATA_HAVE_URING=1"]
            uring.bindirs = []
            uring.libdirs = []

        if self.options.with_mpi:
            mpi = self.cpp_info.components["mpi"]
            mpi.set_property("cmake_target_name", "strata::mpi")
            mpi.requires = ["core", "openmpi::openmpi"]
            mpi.defines = ["STRATA_HAVE_MPI=1"]
            mpi.bindirs = []
            mpi.libdirs = []

        if self.options.with_cuda:
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "strata::cuda")
            cuda.requires = ["core"]
            cuda.defines = ["STRATA_ENABLE_CUDA=1"]
            cuda.system_libs = ["cudart"]   # from the system CUDA toolkit
            cuda.bindirs = []
            cuda.libdirs = []
