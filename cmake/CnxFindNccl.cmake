# cnx_find_nccl(): sets NCCL_INCLUDE_DIR and NCCL_LIBRARY, or
# CNX_NCCL_MISSING to what is missing.
#
# Looks in NCCL_ROOT (CMake or environment variable), the system paths, and
# the nvidia-nccl pip package of the Python that has the LibTorch we build
# against (site-packages/nvidia/nccl/{include,lib}; the library is only
# libnccl.so.2 there, without the unversioned link).
function(cnx_find_nccl)
  set(hints)
  if(NCCL_ROOT)
    list(APPEND hints ${NCCL_ROOT})
  endif()
  if(DEFINED ENV{NCCL_ROOT})
    list(APPEND hints $ENV{NCCL_ROOT})
  endif()
  # python3 on PATH: the one whose pip packages hold the LibTorch we build
  # against (scripts/gpu_check.sh); CNX_PYTHON overrides.
  if(NOT CNX_PYTHON)
    find_program(CNX_PYTHON NAMES python3 python)
  endif()
  if(CNX_PYTHON)
    execute_process(
      COMMAND ${CNX_PYTHON} -c
        "import glob, os, nvidia\nfor d in nvidia.__path__:\n  for h in sorted(glob.glob(os.path.join(d, '**', 'include', 'nccl.h'), recursive=True)): print(os.path.dirname(os.path.dirname(h)))"
      OUTPUT_VARIABLE pip_nccl OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND pip_nccl)
      string(REPLACE "\n" ";" pip_nccl "${pip_nccl}")
      list(APPEND hints ${pip_nccl})
    endif()
  endif()
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${hints} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${hints} PATH_SUFFIXES lib lib64)
  set(missing)
  if(NOT NCCL_INCLUDE_DIR)
    list(APPEND missing "nccl.h")
  endif()
  if(NOT NCCL_LIBRARY)
    list(APPEND missing "libnccl")
  endif()
  if(missing)
    string(REPLACE ";" " and " missing "${missing}")
    set(CNX_NCCL_MISSING "${missing} (searched NCCL_ROOT, the system, and the nvidia-nccl pip package: ${hints})"
        PARENT_SCOPE)
  else()
    set(CNX_NCCL_MISSING "" PARENT_SCOPE)
  endif()
endfunction()
