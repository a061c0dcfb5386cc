"""What the resident's portal shows that no other door needs: the timeline of studies."""
