"""The realtime permissions (``realtime.models.RealtimeAccess``: no table)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="RealtimeAccess",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "verbose_name": "realtime access",
                "permissions": [
                    ("view_monitor", "Can view the realtime monitor (live sockets, security events)"),
                    ("disconnect", "Can disconnect realtime sockets"),
                    ("broadcast", "Can broadcast system events to every connected user"),
                ],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
