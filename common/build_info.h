#pragma once
// The build's version: `git describe --tags --always --dirty` of the source
// tree at build time ($CNX_VERSION overrides it; "unknown" without git).
// Printed by every program's --version and exported as the
// cnx_build_info{version=...} gauge by the worker and the coordinator.

namespace cnx {

const char* build_version();

}  // namespace cnx
