# cnx_fcmae: FCMAE pretraining model (mask generation, sparse / dense-masked
# encoder selection, decoder, loss). Included by model/CMakeLists.txt; the
# encoders live in cnx_sparse_ops (added after this folder; CMake resolves the
# target name at generate time).
cnx_library(cnx_fcmae
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fcmae.cc
  DEPS cnx_model cnx_sparse_ops cnx_base ${TORCH_LIBRARIES})
