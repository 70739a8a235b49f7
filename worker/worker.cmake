# The trainer library (cnx_worker) and the cnx-worker executable.
# Included from worker/CMakeLists.txt (full build only, after worker/data).
# cnx_worker_core: schedule, optimizer, checkpoint files, progress, signals
# (no model or communication dependencies; unit-tested on its own).
cnx_library(cnx_worker_core
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/lr_schedule.cc
    ${CMAKE_CURRENT_LIST_DIR}/optimizer.cc
    ${CMAKE_CURRENT_LIST_DIR}/checkpoint_files.cc
    ${CMAKE_CURRENT_LIST_DIR}/progress.cc
    ${CMAKE_CURRENT_LIST_DIR}/signals.cc
  DEPS cnx_base ${TORCH_LIBRARIES}
  PRIVATE_DEPS OpenSSL::Crypto nlohmann_json::nlohmann_json)

# cnx_worker: the trainer, data sources, FCMAE adapter and the CLI.
cnx_library(cnx_worker
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/batch_source.cc
    ${CMAKE_CURRENT_LIST_DIR}/lease_protocol.cc
    ${CMAKE_CURRENT_LIST_DIR}/lease_source.cc
    ${CMAKE_CURRENT_LIST_DIR}/fcmae_model.cc
    ${CMAKE_CURRENT_LIST_DIR}/trainer.cc
    ${CMAKE_CURRENT_LIST_DIR}/coordinator_link.cc
    ${CMAKE_CURRENT_LIST_DIR}/cli.cc
  DEPS cnx_worker_core cnx_common cnx_comm cnx_fcmae cnx_data cnx_metrics cnx_coordinator_client MPI::MPI_CXX
       ${TORCH_LIBRARIES}
  PRIVATE_DEPS nlohmann_json::nlohmann_json CLI11::CLI11)
target_compile_options(cnx_worker PRIVATE ${TORCH_CXX_FLAGS})

cnx_executable(cnx-worker
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/main.cc
  DEPS cnx_worker)
