# The trainer library (cnx_worker) and the cnx-worker executable.
# Included from worker/CMakeLists.txt (full build only).
set(CNX_WORKER_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/lr_schedule.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/optimizer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_files.cc)

cnx_library(cnx_worker
  SOURCES ${CNX_WORKER_SOURCES}
  DEPS cnx_common ${TORCH_LIBRARIES}
  PRIVATE_DEPS OpenSSL::Crypto nlohmann_json::nlohmann_json)
