#pragma once
// Reading FCMAE training state and turning it into a dense encoder.
//
// Accepted sources (resolve_state_file):
//   * a checkpoint root with a `latest` file (worker/checkpoint_files.h): the
//     checkpoint it names, verified against its MANIFEST.json;
//   * a committed checkpoint folder step-N (or a coordinator's ckpt-*):
//     verified, then its model.pt;
//   * a coordinator job folder <checkpoint.root>/<job.id> holding
//     ckpt-<id>-step-<S> folders: the newest complete one (highest step
//     with a verified MANIFEST.json; `cnx-ctl latest` names the committed
//     one), and a checkpoint.root holding one such job folder (or the one of
//     `job_id`);
//   * a state file: .pt (model/tensor_file.h: the trainer's model.pt, or
//     save_pt) or .safetensors, told apart by their bytes.
//
// The FCMAE state uses the reference FCMAE names (model/fcmae.h):
// encoder.downsample_layers.*, encoder.stages.*, proj.*, mask_token,
// decoder.<i>.*, pred.*. The architecture is inferred from tensor shapes, so
// no config file is needed: dims from the stem / downsample convs, depths
// from the block indices, decoder width from mask_token, decoder depth from
// the decoder block indices, patch size from pred's output channels.
//
// Errors: a source that is missing, corrupt, or not an FCMAE / ConvNeXt V2
// state throws model::WeightsError (or worker::CheckpointError for a
// checkpoint that fails verification) naming the file and what was wrong.
#include <string>
#include <vector>

#include "model/fcmae.h"
#include "model/options.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace cnx::tools {

// The file to read for `path` (see above); `job_id` picks the job folder
// under a coordinator's checkpoint.root. Throws WeightsError naming what was
// looked for (and `cnx-ctl latest`) when nothing usable is there.
std::string resolve_state_file(const std::string& path, const std::string& job_id = "");

// All tensors of a .pt dict or a .safetensors file (format by magic bytes).
model::NamedTensors read_state_file(const std::string& path);

// resolve_state_file + read_state_file.
model::NamedTensors read_state(const std::string& path);

// "encoder." when any key starts with it (an FCMAE state), else "" (a dense
// ConvNeXt V2 state in reference names).
std::string encoder_prefix(const model::NamedTensors& state);

// Bounds of an architecture inferred from a file: an envelope around the
// published variants (the largest, huge, has dims up to 2816, 27 blocks in a
// stage and in_chans 3). Beyond them, or when the file does not hold as many
// values as the inferred model has parameters, inference throws WeightsError
// before any model is built, so a small crafted file cannot make a loader
// allocate gigabytes or thousands of blocks.
constexpr int64_t kMaxFileDim = 4096;    // stage widths and decoder width
constexpr int64_t kMaxFileDepth = 64;    // blocks per stage, decoder blocks
constexpr int64_t kMaxFileInChans = 64;  // as model.in_chans in the config

// Parameters of the dense encoder `options` describes, without head and final
// norm (what an encoder-only file must hold at least).
int64_t encoder_values_needed(const model::ConvNeXtV2Options& options);

// The dense encoder's architecture from reference-named tensors under
// `prefix` (num_classes 0, no drop path). `source` names the file in errors.
model::ConvNeXtV2Options infer_encoder_options(const model::NamedTensors& state, const std::string& prefix,
                                               const std::string& source);

// The FCMAE architecture of a full FCMAE state (encoder + decoder). Options
// not stored in tensors (mask ratio, norm_pix_loss, encoder type) keep the
// FcmaeOptions defaults.
model::FcmaeOptions infer_fcmae_options(const model::NamedTensors& state, const std::string& source);

// Strictly copies `state` into every parameter and buffer of `net`: missing,
// unexpected, wrong-shape entries are all reported in one WeightsError.
void load_fcmae_state(model::FcmaeImpl& net, const model::NamedTensors& state, const std::string& source);

struct EncoderExport {
  model::ConvNeXtV2Options options;  // num_classes 0
  model::NamedTensors tensors;       // encoder only: stem, downsamples, stages
};

// The encoder of `state` (FCMAE or dense) as a validated dense model's
// tensors in `naming` (kReference or kTimm; timm GRN tensors are (4C)). The
// final norm and head are not part of an FCMAE encoder and are never
// included, whatever the source holds.
EncoderExport extract_encoder(const model::NamedTensors& state, model::Naming naming, const std::string& source);

}  // namespace cnx::tools
