package schema

import (
	"errors"
	"fmt"
	"testing"
)

// TestTransitionsEveryRole checks every (from, to, role) triple against the
// workflow as the issue states it, written out by hand so that a change to
// the Transitions table shows up here.
func TestTransitionsEveryRole(t *testing.T) {
	type move struct{ from, to Status }
	all := []Role{RoleClerk, RoleHead, RoleAdmin}
	deciders := []Role{RoleHead, RoleAdmin}
	want := map[move][]Role{
		{StatusReceived, StatusInReview}:             all,
		{StatusInReview, StatusSupplementRequested}:  all,
		{StatusSupplementRequested, StatusInReview}:  all,
		{StatusInReview, StatusApproved}:             deciders,
		{StatusInReview, StatusRejected}:             deciders,
		{StatusApproved, StatusReturned}:             all,
		{StatusRejected, StatusReturned}:             all,
		{StatusReceived, StatusWithdrawn}:            all,
		{StatusInReview, StatusWithdrawn}:            all,
		{StatusSupplementRequested, StatusWithdrawn}: all,
	}
	for _, from := range Statuses {
		for _, to := range Statuses {
			for _, role := range append(all, RoleSystem) {
				name := fmt.Sprintf("%s->%s/%s", from, to, role)
				t.Run(name, func(t *testing.T) {
					roles, exists := want[move{from, to}]
					allowed := false
					for _, r := range roles {
						allowed = allowed || r == role
					}
					err := CheckTransition(from, to, role)
					switch {
					case allowed && err != nil:
						t.Fatalf("want allowed, got %v", err)
					case !allowed && err == nil:
						t.Fatal("want refused, got allowed")
					case !allowed && exists && !errors.Is(err, ErrForbidden):
						t.Fatalf("role denied should be ErrForbidden, got %v", err)
					case !allowed && !exists && !errors.Is(err, ErrConflict):
						t.Fatalf("missing move should be ErrConflict, got %v", err)
					}
					var te *TransitionError
					if err != nil && (!errors.As(err, &te) || te.From != from || te.To != to) {
						t.Fatalf("want *TransitionError naming the move, got %#v", err)
					}
				})
			}
		}
	}
}

func TestAllowedTransitionsListsTargets(t *testing.T) {
	cases := []struct {
		from Status
		role Role
		want []Status
	}{
		{StatusInReview, RoleClerk, []Status{StatusSupplementRequested, StatusWithdrawn}},
		{StatusInReview, RoleHead, []Status{StatusSupplementRequested, StatusApproved, StatusRejected, StatusWithdrawn}},
		{StatusReturned, RoleAdmin, nil},
		{StatusWithdrawn, RoleHead, nil},
		{StatusReceived, RoleSystem, nil},
	}
	for _, c := range cases {
		got := AllowedTransitions(c.from, c.role)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("AllowedTransitions(%s, %s) = %v, want %v", c.from, c.role, got, c.want)
		}
	}
}

func TestStatusPredicates(t *testing.T) {
	for _, s := range Statuses {
		open := s == StatusReceived || s == StatusInReview || s == StatusSupplementRequested
		if s.Open() != open {
			t.Errorf("%s.Open() = %v", s, s.Open())
		}
		if s.Decided() != (s == StatusApproved || s == StatusRejected) {
			t.Errorf("%s.Decided() = %v", s, s.Decided())
		}
	}
	if Status("approved ").Valid() || Role("root").Valid() || RoleSystem.Valid() {
		t.Error("Valid accepts unknown values")
	}
}
