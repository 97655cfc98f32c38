package txclient

import (
	"context"

	"github.com/golcn/golcn/internal/groupctx"
)

func withGroup(ctx context.Context, g string) context.Context { return groupctx.With(ctx, g) }
