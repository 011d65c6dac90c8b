package database

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlanShared(t *testing.T) {
	w := wanted{role: "orders", database: "orders", marker: "managed by promised.dev for Database shop/orders", connLimit: 5, extensions: []string{"citext"}}
	ours := func() *roleState {
		return &roleState{canLogin: true, connLimit: 5, comment: w.marker, adminIsMember: true}
	}
	for _, tc := range []struct {
		name    string
		st      serverState
		want    sharedPlan
		wantErr string
	}{
		{
			name: "nothing there: create everything",
			st:   serverState{adminSuperuser: true, available: []string{"citext"}},
			want: sharedPlan{createRole: true, createDatabase: true, revokePublicConnect: true},
		},
		{
			name: "a non-superuser admin joins the role it creates",
			st:   serverState{available: []string{"citext"}},
			want: sharedPlan{createRole: true, grantToAdmin: true, createDatabase: true, revokePublicConnect: true},
		},
		{
			name: "all in place: nothing to do",
			st:   serverState{adminSuperuser: true, role: ours(), database: &databaseState{owner: "orders"}, available: []string{"citext"}},
			want: sharedPlan{},
		},
		{
			name: "role made, database not yet (a run stopped half way)",
			st:   serverState{adminSuperuser: true, role: ours(), available: []string{"citext"}},
			want: sharedPlan{createDatabase: true, revokePublicConnect: true},
		},
		{
			name: "drift is put back",
			st: serverState{adminSuperuser: true, available: []string{"citext"},
				role:     &roleState{canLogin: false, superuser: true, createDB: true, createRole: true, replication: true, bypassRLS: true, connLimit: -1, comment: w.marker},
				database: &databaseState{owner: "orders", publicConnect: true}},
			want: sharedPlan{
				alterRole:           []string{"LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS", "CONNECTION LIMIT 5"},
				revokePublicConnect: true,
			},
		},
		{
			name:    "a database owned by someone else is never taken over",
			st:      serverState{adminSuperuser: true, database: &databaseState{owner: "someone"}, available: []string{"citext"}},
			wantErr: `database "orders" already exists on pg:5432 and is owned by role "someone", not by this request's role "orders"`,
		},
		{
			name:    "a role of the same name made by someone else is never taken over",
			st:      serverState{adminSuperuser: true, role: &roleState{canLogin: true, comment: ""}, available: []string{"citext"}},
			wantErr: `role "orders" already exists on pg:5432`,
		},
		{
			name:    "a database of ours whose role was re-made by someone else",
			st:      serverState{adminSuperuser: true, role: &roleState{comment: "hand-made"}, database: &databaseState{owner: "orders"}, available: []string{"citext"}},
			wantErr: `its comment does not name this request`,
		},
		{
			name:    "an extension the server lacks is refused before anything is made",
			st:      serverState{adminSuperuser: true},
			wantErr: "extension(s) citext are on the platform's allow-list but not installed on the shared server pg:5432",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planShared(tc.st, w, "pg:5432")
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				if tc.st.available != nil {
					require.True(t, errors.Is(err, ErrNotOurs))
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.want.empty(), got.empty())
		})
	}
}
