# Multi-stage image: `booking-data serve` against BOOKING_DATABASE_URL.
#   docker build -t booking-data .
#   docker run -e BOOKING_DATABASE_URL=postgresql://user:pw@db:5432/booking \
#              -e BOOKING_PAGE_TOKEN_SECRET=... -p 50051:50051 booking-data
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY clients ./clients
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home booking
COPY --from=build /opt/venv /opt/venv
COPY alembic /app/alembic
ENV PATH=/opt/venv/bin:$PATH \
    BOOKING_ENV=prod \
    BOOKING_HOST=0.0.0.0 \
    BOOKING_PORT=50051 \
    BOOKING_MIGRATIONS_DIR=/app/alembic \
    PYTHONUNBUFFERED=1
USER booking
EXPOSE 50051
# No embedded PostgreSQL in the image: BOOKING_DATABASE_URL is required in prod.
ENTRYPOINT ["booking-data"]
CMD ["serve"]
