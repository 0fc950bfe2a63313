from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("evolution-runs", api.EvolutionRunViewSet)

urlpatterns = router.urls
