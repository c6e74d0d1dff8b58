/* Fixture of test_layers_includes_rejects: an include that climbs around the include paths. */
#include "../tensor/tensor.h"
