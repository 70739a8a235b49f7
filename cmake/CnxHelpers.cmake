# Helpers shared by every folder's CMakeLists.txt.

# cnx_library(<name> SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
# A static library with the project's include root and warnings.
function(cnx_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${CNX_WARNINGS}>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# cnx_executable(<name> SOURCES ... [DEPS ...])
function(cnx_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${CNX_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  # The programs (cnx-*) are also linked into <build>/bin, so that one PATH
  # entry reaches them all: export PATH="$PWD/build/bin:$PATH" (README).
  if(name MATCHES "^cnx-")
    add_custom_command(TARGET ${name} POST_BUILD
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/bin
      COMMAND ${CMAKE_COMMAND} -E create_symlink $<TARGET_FILE:${name}> ${CMAKE_BINARY_DIR}/bin/${name}
      VERBATIM)
  endif()
endfunction()

# cnx_test(<name> SOURCES ... [DEPS ...] [LABELS unit|integration|gpu ...] [TIMEOUT s])
# A GoogleTest binary registered as one CTest test.
function(cnx_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS;ARGS;ENV" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${CNX_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name} ${ARG_ARGS})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "CNX_SOURCE_DIR=${PROJECT_SOURCE_DIR};CNX_BINARY_DIR=${PROJECT_BINARY_DIR};${ARG_ENV}")
endfunction()

# cnx_mpi_test(<name> NP <n> SOURCES ... [DEPS ...] [TIMEOUT s])
# A GoogleTest binary (with its own main that initialises MPI) run as
# `mpirun -np <n> ...`, labelled mpi.
function(cnx_mpi_test name)
  cmake_parse_arguments(ARG "" "NP;TIMEOUT" "SOURCES;DEPS;ARGS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${CNX_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest MPI::MPI_CXX)
  if(NOT ARG_NP)
    set(ARG_NP 2)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name}
    COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe --bind-to none
            ${MPIEXEC_NUMPROC_FLAG} ${ARG_NP} $<TARGET_FILE:${name}> ${ARG_ARGS})
  set_tests_properties(${name} PROPERTIES LABELS "mpi" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "CNX_SOURCE_DIR=${PROJECT_SOURCE_DIR};CNX_BINARY_DIR=${PROJECT_BINARY_DIR};OMPI_MCA_rmaps_base_oversubscribe=1")
endfunction()

# cnx_find_pkg(<PREFIX> <pkg-config module> <header> <library names...>)
# Defines the imported target PkgConfig::<PREFIX>: through pkg-config where
# there is one (find_package(PkgConfig) first), else from the header and the
# library found by name in CMAKE_PREFIX_PATH and the system paths (a GPU
# machine whose libraries come from Debian packages unpacked into a prefix
# may have no pkg-config: scripts/gpu_deps.sh).
function(cnx_find_pkg prefix module header)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(${prefix} QUIET IMPORTED_TARGET ${module})
  endif()
  if(TARGET PkgConfig::${prefix})
    return()
  endif()
  find_path(${prefix}_HEADER_DIR ${header})
  find_library(${prefix}_LIB NAMES ${ARGN})
  if(NOT ${prefix}_HEADER_DIR OR NOT ${prefix}_LIB)
    message(FATAL_ERROR "cnx: ${module} not found (header ${header}: ${${prefix}_HEADER_DIR}, library ${ARGN}: "
                        "${${prefix}_LIB}); install its -dev package or add its prefix to CMAKE_PREFIX_PATH")
  endif()
  add_library(PkgConfig::${prefix} INTERFACE IMPORTED)
  set_target_properties(PkgConfig::${prefix} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${${prefix}_HEADER_DIR}"
    INTERFACE_LINK_LIBRARIES "${${prefix}_LIB}")
  message(STATUS "cnx: ${module} without pkg-config: ${${prefix}_LIB}")
endfunction()
