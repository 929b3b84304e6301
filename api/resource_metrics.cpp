#include "api/snapshot.h"
