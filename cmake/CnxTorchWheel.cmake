# Work-arounds for LibTorch as PyPI's PyTorch wheel ships it (2.x; the GPU
# flavours of docs/gpu.md). Debian's libtorch-dev needs neither.

# _cnx_swap_include_dir(OUT INC SHADOW DIR...): OUT is the list DIR... with
# every entry whose real path is INC replaced by SHADOW (order kept).
function(_cnx_swap_include_dir out inc shadow)
  set(swapped)
  foreach(d IN LISTS ARGN)
    get_filename_component(r "${d}" REALPATH)
    if(r STREQUAL inc)
      list(APPEND swapped "${shadow}")
    else()
      list(APPEND swapped "${d}")
    endif()
  endforeach()
  set(${out} "${swapped}" PARENT_SCOPE)
endfunction()

# cnx_hide_torch_bundled_headers(): LibTorch from a PyTorch wheel (2.x)
# carries, in its include/ folder, private copies of third-party headers it
# was built with: fmt 12 (fmt/), Protobuf (google/protobuf/) and oneDNN
# (dnnl*.h, oneapi/). Its targets add that folder as -isystem, which the
# compiler searches before /usr/include, so those copies would shadow the
# system's: spdlog 1.10 (built against Debian's fmt 9) stops compiling
# ("'basic_runtime' is not a member of 'fmt'") and would link against another
# fmt ABI, and proto/'s generated code would meet another Protobuf's headers.
# None of LibTorch's headers that we include use them (checked with
# `c++ -E` over every torch/ATen/c10 include of the project), so the torch
# targets get, instead of that folder, <build>/torch-include: symbolic links
# to every other entry of it. LibTorch installed under a system include
# folder (Debian's libtorch-dev in /usr/include) is left as it is.
function(cnx_hide_torch_bundled_headers)
  if(NOT TORCH_INSTALL_PREFIX)
    return()
  endif()
  get_filename_component(inc "${TORCH_INSTALL_PREFIX}/include" REALPATH)
  foreach(sys IN LISTS CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    get_filename_component(sys "${sys}" REALPATH)
    if(inc STREQUAL sys)
      return()
    endif()
  endforeach()
  file(GLOB entries RELATIVE "${inc}" "${inc}/*")
  set(hidden)
  foreach(e IN LISTS entries)
    if(e MATCHES "^(fmt|google|oneapi|dnnl.*)$")
      list(APPEND hidden ${e})
    endif()
  endforeach()
  if(NOT hidden)
    return()
  endif()
  set(shadow "${CMAKE_BINARY_DIR}/torch-include")
  # Remove the links of an earlier configure (not what they point to).
  file(GLOB old "${shadow}/*")
  foreach(o IN LISTS old)
    file(REMOVE "${o}")
  endforeach()
  file(MAKE_DIRECTORY "${shadow}")
  foreach(e IN LISTS entries)
    if(NOT e IN_LIST hidden)
      file(CREATE_LINK "${inc}/${e}" "${shadow}/${e}" SYMBOLIC)
    endif()
  endforeach()
  foreach(t IN ITEMS headeronly c10 c10_cuda torch_cpu torch_cuda torch torch_nvshmem)
    if(NOT TARGET ${t})
      continue()
    endif()
    get_target_property(dirs ${t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    _cnx_swap_include_dir(out "${inc}" "${shadow}" "${dirs}")
    list(REMOVE_DUPLICATES out)
    set_target_properties(${t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${out}")
  endforeach()
  _cnx_swap_include_dir(dirs "${inc}" "${shadow}" "${TORCH_INCLUDE_DIRS}")
  set(TORCH_INCLUDE_DIRS ${dirs} PARENT_SCOPE)
  set(named ${hidden})
  list(FILTER named EXCLUDE REGEX "^dnnl")
  if(NOT named STREQUAL hidden)
    list(APPEND named "dnnl*")
  endif()
  set(hidden ${named})
  string(REPLACE ";" ", " hidden "${hidden}")
  message(STATUS "cnx: LibTorch's bundled headers (${hidden}) kept off the include path: ${shadow}")
endfunction()

# cnx_prefer_system_libstdcxx(): the wheel's libtorch.so and libtorch_cpu.so
# were linked with parts of libstdc++ built in (the manylinux toolchain's
# static std::filesystem) and export them as unversioned global symbols
# (pytorch/pytorch#133437). Linked after them, as g++ adds it, Debian's
# libstdc++.so.6 loses: our calls to std::filesystem bind to LibTorch's
# copies, and std::filesystem::remove_all there jumps to address 0 (every
# test that removes its temporary folder crashed). Naming libstdc++.so.6
# first on every link line binds those calls to the system's libstdc++, and
# makes it the first library searched at run time.
function(cnx_prefer_system_libstdcxx)
  if(NOT TORCH_LIBRARY OR NOT CMAKE_NM)
    return()
  endif()
  get_filename_component(dir "${TORCH_LIBRARY}" DIRECTORY)
  set(exporting)
  foreach(lib IN ITEMS libtorch.so libtorch_cpu.so)
    set(path "${dir}/${lib}")
    if(NOT EXISTS "${path}")
      continue()
    endif()
    execute_process(COMMAND "${CMAKE_NM}" -D --defined-only "${path}" OUTPUT_VARIABLE syms ERROR_QUIET)
    if(syms MATCHES " T _ZNSt10filesystem")
      list(APPEND exporting ${lib})
    endif()
  endforeach()
  if(NOT exporting)
    return()
  endif()
  add_link_options("SHELL:-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state")
  string(REPLACE ";" ", " exporting "${exporting}")
  message(STATUS "cnx: ${exporting} export std::filesystem (built-in libstdc++ parts): libstdc++.so.6 linked first")
endfunction()

# cnx_torch_uses_libblas(OUT): OUT is ON when LibTorch's libtorch_cpu.so does
# its BLAS through libblas.so.3 (Debian's LibTorch, which scripts/setup.sh
# points at OpenBLAS), OFF when it carries its own (PyPI's wheel: MKL inside
# libtorch_cpu.so), so that the OpenBLAS checks know whether they apply.
# (ON unless readelf shows otherwise: the checks then fail rather than skip.)
function(cnx_torch_uses_libblas out)
  set(uses ON)
  get_filename_component(dir "${TORCH_LIBRARY}" DIRECTORY)
  if(TORCH_LIBRARY AND CMAKE_READELF AND EXISTS "${dir}/libtorch_cpu.so")
    execute_process(COMMAND "${CMAKE_READELF}" -d "${dir}/libtorch_cpu.so" OUTPUT_VARIABLE dyn
                    RESULT_VARIABLE rc ERROR_QUIET)
    if(rc EQUAL 0 AND dyn MATCHES "NEEDED" AND NOT dyn MATCHES "NEEDED[^\n]*\\[libblas\\.so")
      set(uses OFF)
    endif()
  endif()
  set(${out} ${uses} PARENT_SCOPE)
endfunction()
