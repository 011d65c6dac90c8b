# One built-in stage's image, promised.dev/stage/STAGE_NAME:v0.1.0: the
# shared promised-stage image with the stage's name as the entrypoint's
# argument. STAGE_NAME is replaced before the build (make images and
# `promised build` do it): a Dockerfile does not expand build arguments in
# an exec-form ENTRYPOINT, and the image has no shell to expand them later.
# The build needs no context.
ARG BASE=promised.dev/promised-stage:v0.1.0
FROM ${BASE}
ENTRYPOINT ["/promised-stage", "STAGE_NAME"]
